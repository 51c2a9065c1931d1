import pytest

from conftest import run_cli
from digitpairs import UserError, studyfile


def write(tmp_path, text):
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def test_shipped_studies_load():
    paper = studyfile.load(studyfile.shipped("paper"))
    assert [v.name for v in paper.variants][:2] == ["transfer", "siamese_nows"] and paper.rounds == 10
    alpha = studyfile.load(studyfile.shipped("alpha"))
    assert [v.cfg.alpha for v in alpha.variants] == [0, 0.1, 0.25, 0.5, 1, 2, 4]
    assert all(v.cfg.n_val == 200 for v in alpha.variants) and alpha.select == "val"
    aux = studyfile.load(studyfile.shipped("aux_loss"))
    assert {v.cfg.aux_loss for v in aux.variants} == {"ce", "l2"} and len(aux.variants) == 4


def test_overrides_sweeps_and_quick(tmp_path):
    path = write(tmp_path, """
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
    "zero rounds": ('rounds = 0\narchs = ["siamese_ws"]\n', "rounds must be positive"),
    "not toml": ('archs = [\n', "not valid TOML"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_study_files(tmp_path, case):
    text, expected = BAD[case]
    path = write(tmp_path, text)
    with pytest.raises(UserError, match=expected.replace("[", r"\[")) as e:
        studyfile.load(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_cli_names_the_key_and_the_file(tmp_path):
    path = write(tmp_path, 'archs = ["siamese_ws"]\n[config]\nlearning_rate = 0.1\n')
    p = run_cli("run", path, "--store", tmp_path / "s.sqlite")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert "learning_rate" in p.stderr and str(path) in p.stderr
    assert not (tmp_path / "s.sqlite").exists()


def test_an_architectures_own_settings_yield_to_quick_and_the_command_line(tmp_path):
    path = write(tmp_path, """
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
    bad = write(tmp_path, 'archs = [{name = "siamese_ws", head = "vote"}]\n')
    with pytest.raises(UserError, match="head must be one of mlp, logic, prob, not 'vote'"):
        studyfile.load(bad)
    bad = write(tmp_path, 'archs = [{name = "ws_bn_aug_bayes", rotate = 90.0}]\n')
    with pytest.raises(UserError, match=r"archs.ws_bn_aug_bayes: rotate must be in \[0, 45\] degrees, not 90.0"):
        studyfile.load(bad)
