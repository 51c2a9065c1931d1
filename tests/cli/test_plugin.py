from tests.support import run_cli

PLUGIN = '''
from digitpairs import Arch, register_arch


@register_arch
def siamese_tiny():
    return Arch("", "Siamese tiny", objective="comparison+digits", extra={"hidden": 16})
'''


def test_plugin_registers_an_architecture(tmp_path):
    path = tmp_path / "my_archs.py"
    path.write_text(PLUGIN)
    p = run_cli("list", "--plugin", path)
    assert p.returncode == 0 and "siamese_tiny" in p.stdout
    bad = run_cli("list", "--plugin", "no_such_module_here")
    assert bad.returncode == 2 and "cannot import plugin" in bad.stderr and len(bad.stderr.splitlines()) == 1


def test_a_plugin_of_0_2_that_imports_the_old_modules_is_told_where_they_went(tmp_path):
    old = tmp_path / "old_archs.py"
    old.write_text("from digitpairs.config import Arch\nfrom digitpairs.models import register_arch\n")
    p = run_cli("list", "--plugin", old)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert "digitpairs 0.3 moved it: write `from digitpairs import Arch, Config`" in p.stderr
