"""Snakemake's HTML report (`--report`) made safe for names that carry markup.

WORKAROUND for Snakemake's report generator (snakemake.report.html_reporter, checked with 9.27):
it embeds its data (every result's labels and job params, which hold class ids and readable class
names; the rules; the categories) as `json.dumps` text inside `<script>` elements, and `json.dumps`
leaves `<`, `>` and `&` as they are. A class name with `</script><img src=x onerror=...>` therefore
ends the script element and its markup runs when report.html is opened. Here every `json` those
modules use writes `<`, `>`, `&` as `\\u003c`, `\\u003e`, `\\u0026` (rsvc.web.script_safe): the same
strings for JavaScript, which the report's React code shows as text. tests/workflow/test_security.py opens a
report of a run with such names in headless Chromium and fails if the workaround stops working
(docs/security.md).
"""


def _script_safe_json():
    """The `json` module, with `dumps` giving script-safe JSON (rsvc.web.script_safe)."""
    import json
    import types

    from rsvc.web import script_safe

    shim = types.ModuleType("json", "json whose dumps escapes <, > and & (rules/report.smk)")
    shim.__dict__.update({k: v for k, v in vars(json).items() if not k.startswith("__")})
    shim.dumps = lambda *args, **kwargs: script_safe(json.dumps(*args, **kwargs))
    return shim


def _make_report_json_script_safe():
    import json

    try:
        import snakemake.report.html_reporter.data  # noqa: F401 - imports every data module
    except ImportError:  # another Snakemake layout: tests/workflow/test_security.py says so
        return
    shim = _script_safe_json()
    for name, mod in list(sys.modules.items()):
        if name.startswith("snakemake.report.html_reporter") and getattr(mod, "json", None) is json:
            mod.json = shim


if workflow.is_main_process:
    _make_report_json_script_safe()
