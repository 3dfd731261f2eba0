"""Test support: what tests share and no test owns. Import from the module that owns
a name: `environment` (paths, required services, Redis), `queue` (the real queue in
this process), `processes` (the platform and qcluster as child processes),
`servers` (local HTTP servers, a cuttable TCP proxy), `clients` (the WSGI
application in-process, raw sockets, concurrent POSTs), `sandbox` (code that
reaches the operating system from a code step)."""
