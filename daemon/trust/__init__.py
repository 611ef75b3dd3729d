"""The daemon's trust code: who is calling and what they may do, and the record of it.

Modules, lowest first (nothing imports upwards; a contract in pyproject.toml keeps it so):
`caller` (the Caller type, roles, the current-caller contextvar), `tokens` (TokenStore) and
`audit` (AuditLog, on the Alembic `migrations`), `audit_export` (export and verify-export),
`auth` (role table, the gRPC interceptor), `cli_security` (the token/certs/audit commands).
`tls` (certificates, server credentials) stands on its own.
"""
