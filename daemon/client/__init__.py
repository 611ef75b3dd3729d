"""The shell client of `musad status | models | deploy | undeploy | generate | chat`.

connection.py dials a local or remote musad (token, TLS, mTLS) and turns a gRPC failure into
one sentence; render.py draws tables, sizes and the deploy progress bar; commands.py holds
what every subcommand shares (common options, failures, following a progress stream). The
subcommands themselves live in daemon/client_cli.py and daemon/client_models.py.
"""
