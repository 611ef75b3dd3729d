/*
 * A stand-in libmtml.so for tests on machines without Moore Threads GPUs.
 *
 * It exports the MTML functions musad's MUSA back end calls through pymtml (signatures as
 * in MTML 2.x's mtml.h) and emulates MTML_STUB_DEVICES boards (default 8) of an
 * "MTT S5000" with 80 GiB each. Utilisation, memory use, temperature, power and the GPU
 * clock follow smooth curves of CLOCK_MONOTONIC, so successive samples differ.
 * MTML_STUB_UNSUPPORTED="fnA,fnB" makes those functions answer MTML_ERROR_NOT_SUPPORTED,
 * like a board that lacks the sensor. Health fields: two fans, PCIe Gen5 x16, ECC on, four
 * MTLink links (link 3 down on odd boards), MPC off unless MTML_STUB_MPC=1. Uncorrected ECC
 * errors come from the file MTML_STUB_ECC_FILE, read on every call: lines "<board> <count>",
 * so a test makes an error appear while a daemon runs by writing that file.
 *
 * Build: gcc -shared -fPIC -O2 -Wl,-soname,libmtml.so.2 -o libmtml.so mtml_stub.c -lm
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define API __attribute__((visibility("default")))

typedef enum {
    MTML_SUCCESS = 0,
    MTML_ERROR_DRIVER_NOT_LOADED = 1,
    MTML_ERROR_INVALID_ARGUMENT = 3,
    MTML_ERROR_NOT_SUPPORTED = 4,
    MTML_ERROR_INSUFFICIENT_SIZE = 6,
    MTML_ERROR_NOT_FOUND = 7,
    MTML_ERROR_UNKNOWN = 999,
} MtmlReturn;

#define MAX_DEVICES 64
#define GIB (1024ULL * 1024ULL * 1024ULL)
#define MEMORY_TOTAL (80ULL * GIB)

typedef struct MtmlLibrary { int magic; } MtmlLibrary;
typedef struct MtmlSystem { int magic; } MtmlSystem;
typedef struct MtmlDevice { unsigned int index; } MtmlDevice;
typedef struct MtmlGpu { unsigned int index; } MtmlGpu;
typedef struct MtmlMemory { unsigned int index; } MtmlMemory;

typedef struct {
    char sbdf[32];
    unsigned int segment, bus, device, pciDeviceId, pciSubsystemId, busWidth;
    float pciMaxSpeed, pciCurSpeed;
    unsigned int pciMaxWidth, pciCurWidth, pciMaxGen, pciCurGen;
    int rsvd[6];
} MtmlPciInfo;

static MtmlLibrary g_library = {0x6d746d6c};
static MtmlSystem g_system = {0x73797374};
static MtmlDevice g_devices[MAX_DEVICES];
static MtmlGpu g_gpus[MAX_DEVICES];
static MtmlMemory g_memories[MAX_DEVICES];
static int g_initialised = 0;

static unsigned int device_count(void) {
    const char *env = getenv("MTML_STUB_DEVICES");
    long n = env ? strtol(env, NULL, 10) : 8;
    if (n < 0) n = 0;
    if (n > MAX_DEVICES) n = MAX_DEVICES;
    return (unsigned int)n;
}

/* True when MTML_STUB_UNSUPPORTED lists `name` (comma-separated, exact names). */
static int unsupported(const char *name) {
    const char *list = getenv("MTML_STUB_UNSUPPORTED");
    size_t len = strlen(name);
    while (list && *list) {
        const char *end = strchr(list, ',');
        size_t n = end ? (size_t)(end - list) : strlen(list);
        if (n == len && strncmp(list, name, len) == 0) return 1;
        list = end ? end + 1 : NULL;
    }
    return 0;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* 0..1, a different phase per device; changes noticeably within 100 ms. */
static double wave(unsigned int index, double speed) {
    return 0.5 + 0.5 * sin(now_seconds() * speed + 0.9 * index);
}

static unsigned int utilization(unsigned int index) {
    return (unsigned int)lround(100.0 * wave(index, 3.0));
}

static int valid(unsigned int index) { return g_initialised && index < device_count(); }

/* Uncorrected ECC errors of board `index` from the file named by `env` ("<board> <count>"
 * lines, read on every call); 0 when unset, missing or not listed. */
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

static MtmlReturn copy_string(char *dst, unsigned int length, const char *src) {
    if (!dst) return MTML_ERROR_INVALID_ARGUMENT;
    if (strlen(src) + 1 > length) return MTML_ERROR_INSUFFICIENT_SIZE;
    memcpy(dst, src, strlen(src) + 1);
    return MTML_SUCCESS;
}

#define CHECK_SUPPORTED() do { if (unsupported(__func__)) return MTML_ERROR_NOT_SUPPORTED; } while (0)

/* ---- library ----------------------------------------------------------------------- */

API const char *mtmlErrorString(MtmlReturn result) {
    switch (result) {
    case MTML_SUCCESS: return "Success";
    case MTML_ERROR_INVALID_ARGUMENT: return "Invalid argument";
    case MTML_ERROR_NOT_SUPPORTED: return "Not supported";
    case MTML_ERROR_INSUFFICIENT_SIZE: return "Insufficient size";
    case MTML_ERROR_NOT_FOUND: return "Not found";
    default: return "Unknown error";
    }
}

API MtmlReturn mtmlLibraryInit(MtmlLibrary **lib) {
    if (!lib) return MTML_ERROR_INVALID_ARGUMENT;
    for (unsigned int i = 0; i < MAX_DEVICES; i++) {
        g_devices[i].index = g_gpus[i].index = g_memories[i].index = i;
    }
    g_initialised = 1;
    *lib = &g_library;
    return MTML_SUCCESS;
}

API MtmlReturn mtmlLibraryShutDown(MtmlLibrary *lib) {
    if (lib != &g_library) return MTML_ERROR_INVALID_ARGUMENT;
    g_initialised = 0;
    return MTML_SUCCESS;
}

API MtmlReturn mtmlLibraryGetVersion(const MtmlLibrary *lib, char *version, unsigned int length) {
    if (lib != &g_library) return MTML_ERROR_INVALID_ARGUMENT;
    return copy_string(version, length, "2.2.0-stub");
}

API MtmlReturn mtmlLibraryCountDevice(const MtmlLibrary *lib, unsigned int *count) {
    if (lib != &g_library || !count) return MTML_ERROR_INVALID_ARGUMENT;
    *count = device_count();
    return MTML_SUCCESS;
}

API MtmlReturn mtmlLibraryInitDeviceByIndex(const MtmlLibrary *lib, unsigned int index, MtmlDevice **dev) {
    if (lib != &g_library || !dev) return MTML_ERROR_INVALID_ARGUMENT;
    if (!valid(index)) return MTML_ERROR_NOT_FOUND;
    *dev = &g_devices[index];
    return MTML_SUCCESS;
}

API MtmlReturn mtmlLibraryFreeDevice(MtmlDevice *dev) {
    return dev ? MTML_SUCCESS : MTML_ERROR_INVALID_ARGUMENT;
}

API MtmlReturn mtmlLibraryInitSystem(const MtmlLibrary *lib, MtmlSystem **sys) {
    if (lib != &g_library || !sys) return MTML_ERROR_INVALID_ARGUMENT;
    *sys = &g_system;
    return MTML_SUCCESS;
}

API MtmlReturn mtmlLibraryFreeSystem(MtmlSystem *sys) {
    return sys == &g_system ? MTML_SUCCESS : MTML_ERROR_INVALID_ARGUMENT;
}

API MtmlReturn mtmlSystemGetDriverVersion(const MtmlSystem *sys, char *version, unsigned int length) {
    if (sys != &g_system) return MTML_ERROR_INVALID_ARGUMENT;
    CHECK_SUPPORTED();
    return copy_string(version, length, "3.1.0-stub");
}

/* ---- device ------------------------------------------------------------------------ */

API MtmlReturn mtmlDeviceGetIndex(const MtmlDevice *dev, unsigned int *index) {
    if (!dev || !index || !valid(dev->index)) return MTML_ERROR_INVALID_ARGUMENT;
    *index = dev->index;
    return MTML_SUCCESS;
}

API MtmlReturn mtmlDeviceGetName(const MtmlDevice *dev, char *name, unsigned int length) {
    if (!dev || !valid(dev->index)) return MTML_ERROR_INVALID_ARGUMENT;
    return copy_string(name, length, "MTT S5000");
}

API MtmlReturn mtmlDeviceGetUUID(const MtmlDevice *dev, char *uuid, unsigned int length) {
    char buf[48];
    if (!dev || !valid(dev->index)) return MTML_ERROR_INVALID_ARGUMENT;
    snprintf(buf, sizeof buf, "5a3d0000-57b0-4c1e-9d00-%012x", dev->index);
    return copy_string(uuid, length, buf);
}

API MtmlReturn mtmlDeviceGetPciInfo(const MtmlDevice *dev, MtmlPciInfo *pci) {
    if (!dev || !pci || !valid(dev->index)) return MTML_ERROR_INVALID_ARGUMENT;
    memset(pci, 0, sizeof *pci);
    pci->segment = 0;
    pci->bus = 0x1b + 0x10 * dev->index;
    snprintf(pci->sbdf, sizeof pci->sbdf, "0000:%02x:00.0", pci->bus);
    pci->pciDeviceId = 0x03011ed5; /* vendor 0x1ed5 (Moore Threads) */
    pci->pciMaxGen = pci->pciCurGen = 5;
    pci->pciMaxWidth = pci->pciCurWidth = 16;
    return MTML_SUCCESS;
}

API MtmlReturn mtmlDeviceGetPowerUsage(const MtmlDevice *dev, unsigned int *power) {
    if (!dev || !power || !valid(dev->index)) return MTML_ERROR_INVALID_ARGUMENT;
    CHECK_SUPPORTED();
    *power = 120000 + 3500 * utilization(dev->index); /* milliwatts */
    return MTML_SUCCESS;
}

API MtmlReturn mtmlDeviceInitGpu(const MtmlDevice *dev, MtmlGpu **gpu) {
    if (!dev || !gpu || !valid(dev->index)) return MTML_ERROR_INVALID_ARGUMENT;
    *gpu = &g_gpus[dev->index];
    return MTML_SUCCESS;
}

API MtmlReturn mtmlDeviceFreeGpu(MtmlGpu *gpu) { return gpu ? MTML_SUCCESS : MTML_ERROR_INVALID_ARGUMENT; }

API MtmlReturn mtmlDeviceInitMemory(const MtmlDevice *dev, MtmlMemory **mem) {
    if (!dev || !mem || !valid(dev->index)) return MTML_ERROR_INVALID_ARGUMENT;
    *mem = &g_memories[dev->index];
    return MTML_SUCCESS;
}

API MtmlReturn mtmlDeviceFreeMemory(MtmlMemory *mem) { return mem ? MTML_SUCCESS : MTML_ERROR_INVALID_ARGUMENT; }

/* ---- GPU --------------------------------------------------------------------------- */

API MtmlReturn mtmlGpuGetUtilization(const MtmlGpu *gpu, unsigned int *util) {
    if (!gpu || !util || !valid(gpu->index)) return MTML_ERROR_INVALID_ARGUMENT;
    CHECK_SUPPORTED();
    *util = utilization(gpu->index);
    return MTML_SUCCESS;
}

API MtmlReturn mtmlGpuGetTemperature(const MtmlGpu *gpu, unsigned int *temp) {
    if (!gpu || !temp || !valid(gpu->index)) return MTML_ERROR_INVALID_ARGUMENT;
    CHECK_SUPPORTED();
    *temp = 38 + utilization(gpu->index) * 40 / 100; /* degrees Celsius */
    return MTML_SUCCESS;
}

API MtmlReturn mtmlGpuGetClock(const MtmlGpu *gpu, unsigned int *clockMhz) {
    if (!gpu || !clockMhz || !valid(gpu->index)) return MTML_ERROR_INVALID_ARGUMENT;
    CHECK_SUPPORTED();
    *clockMhz = 1000 + 10 * utilization(gpu->index);
    return MTML_SUCCESS;
}

API MtmlReturn mtmlGpuGetMaxClock(const MtmlGpu *gpu, unsigned int *clockMhz) {
    if (!gpu || !clockMhz || !valid(gpu->index)) return MTML_ERROR_INVALID_ARGUMENT;
    *clockMhz = 2000;
    return MTML_SUCCESS;
}

/* ---- memory ------------------------------------------------------------------------ */

API MtmlReturn mtmlMemoryGetTotal(const MtmlMemory *mem, unsigned long long *total) {
    if (!mem || !total || !valid(mem->index)) return MTML_ERROR_INVALID_ARGUMENT;
    *total = MEMORY_TOTAL;
    return MTML_SUCCESS;
}

API MtmlReturn mtmlMemoryGetUsed(const MtmlMemory *mem, unsigned long long *used) {
    if (!mem || !used || !valid(mem->index)) return MTML_ERROR_INVALID_ARGUMENT;
    CHECK_SUPPORTED();
    /* 10..70 % of the board, in 4 KiB pages. */
    *used = ((unsigned long long)((0.10 + 0.60 * wave(mem->index, 0.5)) * MEMORY_TOTAL)) & ~4095ULL;
    return MTML_SUCCESS;
}

API MtmlReturn mtmlMemoryGetUtilization(const MtmlMemory *mem, unsigned int *util) {
    if (!mem || !util || !valid(mem->index)) return MTML_ERROR_INVALID_ARGUMENT;
    CHECK_SUPPORTED();
    *util = utilization(mem->index) / 2;
    return MTML_SUCCESS;
}

API MtmlReturn mtmlMemoryGetClock(const MtmlMemory *mem, unsigned int *clockMhz) {
    if (!mem || !clockMhz || !valid(mem->index)) return MTML_ERROR_INVALID_ARGUMENT;
    CHECK_SUPPORTED();
    *clockMhz = 1600;
    return MTML_SUCCESS;
}

API MtmlReturn mtmlMemoryGetMaxClock(const MtmlMemory *mem, unsigned int *clockMhz) {
    if (!mem || !clockMhz || !valid(mem->index)) return MTML_ERROR_INVALID_ARGUMENT;
    *clockMhz = 1600;
    return MTML_SUCCESS;
}

/* ---- health: fans, ECC, MTLink, MPC ---------------------------------------------------- */

typedef struct { unsigned int version, bandWidth, linkNum; unsigned int rsvd[4]; } MtmlMtLinkSpec;

API MtmlReturn mtmlDeviceCountFan(const MtmlDevice *dev, unsigned int *count) {
    if (!dev || !count || !valid(dev->index)) return MTML_ERROR_INVALID_ARGUMENT;
    CHECK_SUPPORTED();
    *count = 2;
    return MTML_SUCCESS;
}

API MtmlReturn mtmlDeviceGetFanSpeed(const MtmlDevice *dev, unsigned int fan, unsigned int *speed) {
    if (!dev || !speed || !valid(dev->index) || fan >= 2) return MTML_ERROR_INVALID_ARGUMENT;
    CHECK_SUPPORTED();
    *speed = 30 + utilization(dev->index) / 2 + 2 * fan; /* percent */
    return MTML_SUCCESS;
}

API MtmlReturn mtmlMemoryGetEccMode(const MtmlMemory *mem, unsigned int *current, unsigned int *pending) {
    if (!mem || !current || !pending || !valid(mem->index)) return MTML_ERROR_INVALID_ARGUMENT;
    CHECK_SUPPORTED();
    *current = *pending = 1; /* MTML_MEMORY_ECC_ENABLE */
    return MTML_SUCCESS;
}

API MtmlReturn mtmlMemoryGetEccErrorCounter(const MtmlMemory *mem, unsigned int errorType,
                                            unsigned int counterType, unsigned int location,
                                            unsigned long long *count) {
    if (!mem || !count || !valid(mem->index) || errorType > 1 || counterType > 1 || location != 1)
        return MTML_ERROR_INVALID_ARGUMENT;
    CHECK_SUPPORTED();
    *count = errorType == 1 ? ecc_errors_from_file("MTML_STUB_ECC_FILE", mem->index) : 0;
    return MTML_SUCCESS;
}

API MtmlReturn mtmlDeviceGetMtLinkSpec(const MtmlDevice *dev, MtmlMtLinkSpec *spec) {
    if (!dev || !spec || !valid(dev->index)) return MTML_ERROR_INVALID_ARGUMENT;
    CHECK_SUPPORTED();
    memset(spec, 0, sizeof *spec);
    spec->version = 1;
    spec->bandWidth = 100;
    spec->linkNum = 4;
    return MTML_SUCCESS;
}

API MtmlReturn mtmlDeviceGetMtLinkState(const MtmlDevice *dev, unsigned int link, unsigned int *state) {
    if (!dev || !state || !valid(dev->index) || link >= 4) return MTML_ERROR_INVALID_ARGUMENT;
    CHECK_SUPPORTED();
    *state = (link == 3 && dev->index % 2 == 1) ? 0 : 1; /* MTML_MTLINK_STATE_DOWN / _UP */
    return MTML_SUCCESS;
}

API MtmlReturn mtmlDeviceGetMpcMode(const MtmlDevice *dev, unsigned int *mode) {
    const char *env = getenv("MTML_STUB_MPC");
    if (!dev || !mode || !valid(dev->index)) return MTML_ERROR_INVALID_ARGUMENT;
    CHECK_SUPPORTED();
    *mode = env && strcmp(env, "1") == 0; /* MTML_DEVICE_MPC_ENABLE / _DISABLE */
    return MTML_SUCCESS;
}
