import pytest

from digitpairs import UserError
from digitpairs.spec import studyfile
from tests.support import assert_study_refused, run_cli, write_study


def test_shipped_studies_load():
    paper = studyfile.load(studyfile.shipped("paper"))
    assert [v.name for v in paper.variants][:2] == ["transfer", "siamese_nows"] and paper.rounds == 10
    alpha = studyfile.load(studyfile.shipped("alpha"))
    assert [v.cfg.alpha for v in alpha.variants] == [0, 0.1, 0.25, 0.5, 1, 2, 4]
    assert all(v.cfg.n_val == 200 for v in alpha.variants) and alpha.select == "val"
    aux = studyfile.load(studyfile.shipped("aux_loss"))
    assert {v.cfg.aux_loss for v in aux.variants} == {"ce", "l2"} and len(aux.variants) == 4
    assert paper.model == paper.spec()["model"] == "ws_bn_aug_bayes" and "model" not in alpha.spec()


def test_overrides_sweeps_and_quick(tmp_path):
    path = write_study(tmp_path, """
rounds = 3
archs = [{name = "siamese_ws", dropout = true, variant = "ws_drop"}, {name = "siamese_ws_aux", lr = 0.002}]
[config]
epochs = 7
[sweep]
batch_size = [50, 100]
""")
    s = studyfile.load(path)
    assert s.name == "study" and [v.name for v in s.variants] == [
        "ws_drop[batch_size=50]", "ws_drop[batch_size=100]",
        "siamese_ws_aux[lr=0.002,batch_size=50]", "siamese_ws_aux[lr=0.002,batch_size=100]"]
    assert s.variants[0].arch.dropout and s.variants[2].cfg.lr == 0.002 and s.variants[3].cfg.epochs == 7
    q = studyfile.load(path, quick=True, overrides={"seed": 5})
    assert q.variants[0].cfg.epochs == 2 and q.variants[0].cfg.seed == 5


BAD = {
    "typo at top": ('rounds = 3\narchs = ["siamese_ws"]\nrouns = 4\n', "unknown key 'rouns'"),
    "typo in config": ('archs = ["siamese_ws"]\n[config]\nepoch = 3\n', "unknown key 'epoch'"),
    "typo in sweep": ('archs = ["siamese_ws"]\n[sweep]\nalpah = [1, 2]\n', "unknown key 'alpah'"),
    "typo in arch": ('archs = [{name = "siamese_ws", dropuot = true}]\n', "unknown key 'dropuot'"),
    "unknown arch": ('archs = ["siamese_xx"]\n', "unknown architecture 'siamese_xx'"),
    "wrong type": ('archs = ["siamese_ws"]\n[config]\nepochs = "many"\n', "epochs must be int"),
    "bad value": ('archs = ["siamese_ws"]\n[config]\nsize = 20\n', "size must be 14 or 28"),
    "zero rounds": ('rounds = 0\narchs = ["siamese_ws"]\n', "rounds must be in [1, 1000], not 0"),
    "not toml": ('archs = [\n', "not valid TOML"),
}
A = 'archs = ["siamese_ws"]\n'
BAD |= {  # every key, with a wrong type, a negative, a zero, a huge value, NaN/inf, an empty string
    "name up a folder": ('name = "../x"\n' + A, "'../x' is not a valid name"),
    "name with a separator": ('name = "a/b"\n' + A, "'a/b' is not a valid name"),
    "name hidden": ('name = ".x"\n' + A, "'.x' is not a valid name"),
    "name empty": ('name = ""\n' + A, "'' is not a valid name"),
    "name not a string": ('name = 5\n' + A, "name must be str, not 5"),
    "rounds huge": ('rounds = 1000000000\n' + A, "rounds must be in [1, 1000]"),
    "rounds float": ('rounds = 3.0\n' + A, "rounds must be int, not 3.0"),
    "rounds bool": ('rounds = true\n' + A, "rounds must be int, not True"),
    "select": ('select = "test"\n' + A, 'select must be "val"'),
    "select without a validation split": ('select = "val"\n' + A + '[sweep]\nalpha = [0.5, 1]\n',
                                          'siamese_ws[alpha=0.5] has none: set n_val'),
    "model unknown": ('model = "siamese_xx"\n' + A, "model 'siamese_xx' is no variant of this study"),
    "model a list": ('model = ["siamese_ws"]\n' + A, "model must be str, not ['siamese_ws']"),
    "archs missing": ('rounds = 2\n', "archs must be a non-empty list"),
    "archs a string": ('archs = "siamese_ws"\n', "archs must be a non-empty list"),
    "archs entry a number": ('archs = [5]\n', "each entry of archs is a name or a table with a name"),
    "archs name a list": ('archs = [{name = ["x"]}]\n', "each entry of archs is a name or a table with a name"),
    "variant up a folder": ('archs = [{name = "siamese_ws", variant = "../v"}]\n', "'../v' is not a valid name"),
    "variant empty": ('archs = [{name = "siamese_ws", variant = ""}]\n', "'' is not a valid name"),
    "label two lines": ('archs = [{name = "siamese_ws", label = "a\\nb"}]\n', "label must be one printable line"),
    "flag a string": ('archs = [{name = "siamese_ws", bn = "yes"}]\n', "bn must be bool"),
    "lr nan": ('archs = [{name = "siamese_ws", lr = nan}]\n', "lr must be a finite number, not nan"),
    "lr inf": ('archs = [{name = "siamese_ws", lr = inf}]\n', "lr must be a finite number, not inf"),
    "channels one": ('archs = [{name = "siamese_ws", channels = [16]}]\n', "channels must be two integers"),
    "channels words": ('archs = [{name = "siamese_ws", channels = ["a", "b"]}]\n', "channels must be two integers"),
    "channels zero": ('archs = [{name = "siamese_ws", channels = [0, 16]}]\n', "channels must be two widths in [1, 512]"),
    "channels huge": ('archs = [{name = "siamese_ws", channels = [100000, 16]}]\n', "channels must be two widths"),
    "hidden zero": ('archs = [{name = "siamese_ws", hidden = 0}]\n', "hidden must be in [1, 4096]"),
    "hidden huge": ('archs = [{name = "siamese_ws", hidden = 10000000}]\n', "hidden must be in [1, 4096]"),
    "head_hidden negative": ('archs = [{name = "siamese_ws", head_hidden = -1}]\n', "head_hidden must be in [1, 1024]"),
    "config a number": ('config = 3\n' + A, "[config] must be a table"),
    "pairs beyond MNIST": (A + '[config]\nn_pairs = 40000\n', "n_pairs must be in [1, 30000]"),
    "test pairs beyond MNIST": (A + '[config]\nn_test = 5001\n', "n_test must be in [1, 5000]"),
    "validation takes every pair": (A + '[config]\nn_val = 1000\n', "n_val must be in [0, n_pairs=1000)"),
    "swap a number": (A + '[config]\nswap = 1\n', "swap must be bool"),
    "batch zero": (A + '[config]\nbatch_size = 0\n', "batch_size must be in [1, 60000]"),
    "alpha -inf": (A + '[config]\nalpha = -inf\n', "alpha must be a finite number"),
    "label smoothing nan": (A + '[config]\nlabel_smoothing = nan\n', "label_smoothing must be a finite number"),
    "dropout one": (A + '[config]\ndropout_p = 1.0\n', "dropout_p must be in [0, 1)"),
    "members zero": (A + '[config]\nmembers = 0\n', "members must be in [1, 16]"),
    "seed huge": (A + '[config]\nseed = 9223372036854775807\n', "seed must be in [0, 4294967295]"),
    "epochs huge": (A + '[config]\nepochs = 1000000\n', "epochs must be in [1, 1000]"),
    "device": (A + '[config]\ndevice = "tpu"\n', "device must be auto, cpu, cuda or cuda:N"),
    "device empty": (A + '[config]\ndevice = ""\n', "device must be auto, cpu, cuda or cuda:N"),
    "size-keyed setting at another size": ('archs = ["ws_bn_aug_bayes"]\n[sweep]\nsize = [20]\n',
                                           "archs.ws_bn_aug_bayes: size must be 14 or 28, not 20"),
    "sweep a number": (A + '[sweep]\nalpha = 0.5\n', "alpha must be a non-empty list"),
    "sweep empty": (A + '[sweep]\nalpha = []\n', "alpha must be a non-empty list"),
    "sweep twice the same": (A + '[sweep]\nalpha = [0.5, 0.5]\n', "alpha lists 0.5 twice"),
    "sweep of words": (A + '[sweep]\nalpha = ["a"]\n', "alpha must be float"),
    "sweep nan": (A + '[sweep]\nlr = [nan]\n', "lr must be a finite number"),
    "sweep head": (A + '[sweep]\nhead = ["mlp", "vote"]\n', "head must be one of mlp, logic, prob"),
    "sweep of a run option": (A + '[sweep]\ncuda_graphs = [true, false]\n', "pass --cuda-graphs"),
    "sweep of matmul_conv": (A + '[sweep]\nmatmul_conv = [true, false]\n', "pass --matmul-conv"),
    "run option in an entry": ('archs = [{name = "siamese_ws", cuda_graphs = false}]\n',
                               ("cuda_graphs says how a study runs, not what it trains: set it in [config], or pass "
                                "--cuda-graphs or --no-cuda-graphs")),
    "device in an entry": ('archs = [{name = "siamese_ws", device = "cpu"}]\n', "set it in [config], or pass --device"),
    "sweep of a million": (A + '[sweep]\n' + "".join(f"{k} = {list(range(1, 11))}\n" for k in
                                                      ("epochs", "batch_size", "hidden", "head_hidden")),
                           "make 10000 variants, more than 1000"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_study_files(tmp_path, case):
    assert_study_refused(tmp_path, *BAD[case])


def test_a_file_name_that_is_no_study_name_needs_a_name_key(tmp_path):
    path = tmp_path / "my study.toml"
    path.write_text(A)
    with pytest.raises(UserError, match="the file's name 'my study' is no valid study name"):
        studyfile.load(path)
    path.write_text('name = "my_study"\n' + A)
    assert studyfile.load(path).name == "my_study"


def test_a_size_keyed_setting_of_a_plugin_at_a_size_it_lacks(tmp_path):
    from digitpairs.spec.arch import Arch
    from digitpairs.spec.registry import own_settings

    arch = Arch("only28", "only 28", extra={"pad": {28: False}})
    assert own_settings(arch, 28) == {"pad": False}
    with pytest.raises(UserError, match="only28 sets pad for image sizes 28 only, not 14"):
        own_settings(arch, 14)


def test_cli_names_the_key_and_the_file(tmp_path):
    path = write_study(tmp_path, 'archs = ["siamese_ws"]\n[config]\nlearning_rate = 0.1\n')
    p = run_cli("run", path, "--store", tmp_path / "s.sqlite")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert "learning_rate" in p.stderr and str(path) in p.stderr
    assert not (tmp_path / "s.sqlite").exists()


def test_an_architectures_own_settings_yield_to_quick_and_the_command_line(tmp_path):
    path = write_study(tmp_path, """
archs = ["ws_bn_aug_bayes", {name = "ws_bn_aug_bayes", epochs = 7, variant = "short"}]
[config]
epochs = 25
""")
    full, short = studyfile.load(path).variants
    assert full.cfg.epochs == 50 and full.cfg.tta == 5 and not full.cfg.pad  # its own settings beat [config]
    assert short.cfg.epochs == 7  # the variant's own beat the architecture's
    assert studyfile.load(path, quick=True).variants[0].cfg.epochs == 2  # --quick stays quick
    assert studyfile.load(path, overrides={"epochs": 3}).variants[0].cfg.epochs == 3
    assert studyfile.load(path, overrides={"size": 14}).variants[0].cfg.pad  # a setting that depends on the size
    bad = write_study(tmp_path, 'archs = [{name = "siamese_ws", head = "vote"}]\n')
    with pytest.raises(UserError, match="head must be one of mlp, logic, prob, not 'vote'"):
        studyfile.load(bad)
    bad = write_study(tmp_path, 'archs = [{name = "ws_bn_aug_bayes", rotate = 90.0}]\n')
    with pytest.raises(UserError, match=r"archs.ws_bn_aug_bayes: rotate must be in \[0, 45\] degrees, not 90.0"):
        studyfile.load(bad)


def test_the_readme_example_study_loads(tmp_path):
    """The study file the README shows is a valid study, whose claim names two of its variants."""
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    text = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    s = studyfile.load(write_study(tmp_path, text))
    names = [v.name for v in s.variants]
    assert len(names) == 6 and {s.claims[0]["better"], s.claims[0]["worse"]} <= set(names)
    assert all(v.arch.objective == "comparison+digits" for v in s.variants)  # alpha matters to every variant


def test_a_byte_order_mark_is_no_statement(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + b'rounds = 2\narchs = ["siamese_ws"]\n')
    assert studyfile.load(path).rounds == 2
