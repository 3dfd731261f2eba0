"""The dependency audit's verdict (.ci/audit.py): vulnerable fails, unchecked is never clean."""

import json
import subprocess
import sys

from tests.support.environment import BASE_DIR

SCRIPT = str(BASE_DIR / ".ci" / "audit.py")


def verdict(tmp_path, dependencies, **env):
    report = tmp_path / "audit.json"
    report.write_text(json.dumps({"dependencies": dependencies, "fixes": []}))
    done = subprocess.run(
        [sys.executable, SCRIPT, str(report)], capture_output=True, text=True, env=env
    )
    return done.returncode, done.stdout


def test_a_vulnerable_dependency_fails_the_audit(tmp_path):
    code, out = verdict(
        tmp_path,
        [
            {
                "name": "django",
                "version": "5.2",
                "vulns": [{"id": "PYSEC-1", "fix_versions": ["5.2.1"]}],
            },
            {"name": "jinja2", "version": "3.1", "vulns": []},
        ],
    )
    assert code == 1 and "VULNERABLE django 5.2: PYSEC-1 (fixed in 5.2.1)" in out


def test_unchecked_dependencies_are_named_and_fail_only_when_required(tmp_path):
    skipped = [{"name": "django", "skip_reason": "Dependency not found on PyPI"}]
    code, out = verdict(tmp_path, skipped)
    assert code == 0 and "could not audit 1 of 1 dependencies" in out and "no known" not in out
    assert verdict(tmp_path, skipped, IOLINKER_AUDIT_REQUIRED="1")[0] == 1


def test_a_clean_audit_passes(tmp_path):
    code, out = verdict(tmp_path, [{"name": "django", "version": "5.2", "vulns": []}])
    assert code == 0 and "1 dependencies checked, 0 vulnerable, 0 not checked" in out
