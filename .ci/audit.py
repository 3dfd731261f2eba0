"""Read pip-audit's JSON report: fail on any known vulnerability; when some
dependencies could not be looked up (the vulnerability database unreachable, as
on machines that only reach a package mirror), say so loudly and name them, and
fail only when IOLINKER_AUDIT_REQUIRED=1. Never prints "no known
vulnerabilities" for what was not checked."""

import json
import os
import sys

with open(sys.argv[1]) as f:
    report = json.load(f)
deps = report["dependencies"]
vulnerable = [d for d in deps if d.get("vulns")]
skipped = [d for d in deps if "skip_reason" in d]
checked = len(deps) - len(skipped)
for dep in vulnerable:
    for vuln in dep["vulns"]:
        fixes = ", ".join(vuln.get("fix_versions") or []) or "no fix yet"
        print(f"VULNERABLE {dep['name']} {dep['version']}: {vuln['id']} (fixed in {fixes})")
if skipped:
    print(
        f"WARNING: pip-audit could not audit {len(skipped)} of {len(deps)} dependencies "
        f"(vulnerability database unreachable?): {', '.join(d['name'] for d in skipped)}"
    )
print(
    f"pip-audit: {checked} dependencies checked, {len(vulnerable)} vulnerable, "
    f"{len(skipped)} not checked"
)
if vulnerable or (skipped and os.environ.get("IOLINKER_AUDIT_REQUIRED") == "1"):
    sys.exit(1)
