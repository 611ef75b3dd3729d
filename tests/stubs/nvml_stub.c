/*
 * A stand-in libnvidia-ml.so.1 for tests on machines without NVIDIA GPUs.
 *
 * It exports the NVML functions musad's CUDA back end calls through pynvml (nvidia-ml-py
 * 12/13 symbol names, e.g. nvmlDeviceGetCount_v2, nvmlDeviceGetPciInfo_v3) and emulates
 * NVML_STUB_DEVICES boards (default 4) of an "NVIDIA H100 80GB HBM3", compute capability
 * 9.0, 700 W limit. Utilisation, memory use, temperature, power and the SM clock follow
 * smooth curves of CLOCK_MONOTONIC. NVML_STUB_UNSUPPORTED="fnA,fnB" makes those functions
 * answer NVML_ERROR_NOT_SUPPORTED. Health fields: fan, PCIe Gen5 x16, ECC on, 18 NVLinks up;
 * uncorrected ECC errors come from the file NVML_STUB_ECC_FILE, read on every call ("<board>
 * <count>" lines).
 *
 * Build: gcc -shared -fPIC -O2 -Wl,-soname,libnvidia-ml.so.1 -o libnvidia-ml.so nvml_stub.c -lm
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define API __attribute__((visibility("default")))

typedef enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_UNKNOWN = 999,
} nvmlReturn_t;

#define MAX_DEVICES 64
#define GIB (1024ULL * 1024ULL * 1024ULL)
#define MEMORY_TOTAL (80ULL * GIB)

typedef struct nvmlDevice_st { unsigned int index; } *nvmlDevice_t;

typedef struct {
    char busIdLegacy[16];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;

typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;

static struct nvmlDevice_st g_devices[MAX_DEVICES];
static int g_init_count = 0;

static unsigned int device_count(void) {
    const char *env = getenv("NVML_STUB_DEVICES");
    long n = env ? strtol(env, NULL, 10) : 4;
    if (n < 0) n = 0;
    if (n > MAX_DEVICES) n = MAX_DEVICES;
    return (unsigned int)n;
}

static int unsupported(const char *name) {
    const char *list = getenv("NVML_STUB_UNSUPPORTED");
    size_t len = strlen(name);
    while (list && *list) {
        const char *end = strchr(list, ',');
        size_t n = end ? (size_t)(end - list) : strlen(list);
        if (n == len && strncmp(list, name, len) == 0) return 1;
        list = end ? end + 1 : NULL;
    }
    return 0;
}

static double wave(unsigned int index, double speed) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double t = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    return 0.5 + 0.5 * sin(t * speed + 1.3 * index);
}

static unsigned int utilization(unsigned int index) { return (unsigned int)lround(100.0 * wave(index, 3.0)); }

static int valid(nvmlDevice_t d) { return g_init_count > 0 && d && d->index < device_count(); }

static unsigned long long ecc_errors_from_file(const char *env, unsigned int index) {
    const char *path = getenv(env);
    unsigned long long count = 0, n;
    unsigned int board;
    FILE *f = path ? fopen(path, "r") : NULL;
    if (!f) return 0;
    while (fscanf(f, "%u %llu", &board, &n) == 2) {
        if (board == index) count = n;
    }
    fclose(f);
    return count;
}

static nvmlReturn_t copy_string(char *dst, unsigned int length, const char *src) {
    if (!dst) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(src) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(dst, src, strlen(src) + 1);
    return NVML_SUCCESS;
}

#define CHECK(d, p) do { \
    if (g_init_count == 0) return NVML_ERROR_UNINITIALIZED; \
    if (!valid(d) || !(p)) return NVML_ERROR_INVALID_ARGUMENT; \
    if (unsupported(__func__)) return NVML_ERROR_NOT_SUPPORTED; } while (0)

API const char *nvmlErrorString(nvmlReturn_t r) {
    switch (r) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    default: return "Unknown Error";
    }
}

API nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    for (unsigned int i = 0; i < MAX_DEVICES; i++) g_devices[i].index = i;
    g_init_count++;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }

API nvmlReturn_t nvmlShutdown(void) {
    if (g_init_count == 0) return NVML_ERROR_UNINITIALIZED;
    g_init_count--;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    if (g_init_count == 0) return NVML_ERROR_UNINITIALIZED;
    if (unsupported(__func__)) return NVML_ERROR_NOT_SUPPORTED;
    return copy_string(version, length, "550.54.15-stub");
}

API nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    if (g_init_count == 0) return NVML_ERROR_UNINITIALIZED;
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    *count = device_count();
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    if (g_init_count == 0) return NVML_ERROR_UNINITIALIZED;
    if (!device || index >= device_count()) return NVML_ERROR_INVALID_ARGUMENT;
    *device = &g_devices[index];
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char *name, unsigned int length) {
    CHECK(d, name);
    return copy_string(name, length, "NVIDIA H100 80GB HBM3");
}

API nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *uuid, unsigned int length) {
    char buf[64];
    CHECK(d, uuid);
    snprintf(buf, sizeof buf, "GPU-0b5e0000-1111-2222-3333-%012x", d->index);
    return copy_string(uuid, length, buf);
}

API nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t d, nvmlPciInfo_t *pci) {
    CHECK(d, pci);
    memset(pci, 0, sizeof *pci);
    pci->bus = 0x18 + 0x20 * d->index;
    snprintf(pci->busId, sizeof pci->busId, "00000000:%02X:00.0", pci->bus);
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "0000:%02X:00.0", pci->bus);
    pci->pciDeviceId = 0x233010de;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t d, int *major, int *minor) {
    CHECK(d, major && minor);
    *major = 9;
    *minor = 0;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *mem) {
    CHECK(d, mem);
    mem->total = MEMORY_TOTAL;
    mem->used = ((unsigned long long)((0.05 + 0.80 * wave(d->index, 0.5)) * MEMORY_TOTAL)) & ~4095ULL;
    mem->free = mem->total - mem->used;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *u) {
    CHECK(d, u);
    u->gpu = utilization(d->index);
    u->memory = u->gpu / 3;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t d, unsigned int sensor, unsigned int *temp) {
    CHECK(d, temp);
    if (sensor != 0) return NVML_ERROR_INVALID_ARGUMENT;
    *temp = 30 + utilization(d->index) / 2;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t d, unsigned int *power) {
    CHECK(d, power);
    *power = 70000 + 6000 * utilization(d->index); /* milliwatts */
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t d, unsigned int *limit) {
    CHECK(d, limit);
    *limit = 700000; /* milliwatts */
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t d, unsigned int type, unsigned int *clock) {
    CHECK(d, clock);
    if (type == 1) *clock = 345 + 15 * utilization(d->index); /* SM */
    else if (type == 2) *clock = 2619;                        /* memory */
    else if (type == 0) *clock = 345 + 15 * utilization(d->index);
    else return NVML_ERROR_INVALID_ARGUMENT;
    return NVML_SUCCESS;
}

#define NVLINKS 18

API nvmlReturn_t nvmlDeviceGetFanSpeed(nvmlDevice_t d, unsigned int *speed) {
    CHECK(d, speed);
    *speed = 35 + utilization(d->index) / 2; /* percent */
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetCurrPcieLinkGeneration(nvmlDevice_t d, unsigned int *gen) {
    CHECK(d, gen);
    *gen = 5;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetCurrPcieLinkWidth(nvmlDevice_t d, unsigned int *width) {
    CHECK(d, width);
    *width = 16;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetEccMode(nvmlDevice_t d, unsigned int *current, unsigned int *pending) {
    CHECK(d, current && pending);
    *current = *pending = 1; /* NVML_FEATURE_ENABLED */
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetTotalEccErrors(nvmlDevice_t d, unsigned int errorType,
                                             unsigned int counterType, unsigned long long *count) {
    CHECK(d, count);
    if (errorType > 1 || counterType > 1) return NVML_ERROR_INVALID_ARGUMENT;
    *count = errorType == 1 ? ecc_errors_from_file("NVML_STUB_ECC_FILE", d->index) : 0;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetNvLinkState(nvmlDevice_t d, unsigned int link, unsigned int *active) {
    CHECK(d, active);
    if (link >= NVLINKS) return NVML_ERROR_INVALID_ARGUMENT;
    *active = 1; /* NVML_FEATURE_ENABLED */
    return NVML_SUCCESS;
}
