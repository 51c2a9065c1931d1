"""What a network learns from: Arch.objective, in the registry, the loss, study files and stores written before."""

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from digitpairs import UserError
from digitpairs.data.pairs import target_of
from digitpairs.engine.steps import losses
from digitpairs.spec import studyfile
from digitpairs.spec.arch import HEADS, OBJECTIVES, Arch, current_arch, objective_of
from digitpairs.spec.config import Config
from digitpairs.spec.registry import ARCHS
from digitpairs.store import Store
from tests.support import assert_study_refused, write_study

OLD_AUX = {"transfer": True, "siamese_nows": False, "siamese_ws": False, "siamese_ws_aux": True,
           "siamese_ws_aux_bn": True, "siamese_ws_aux_bn_drop": True, "ws_bn_aug_bayes": True}  # before objective


def test_the_registry_says_what_each_architecture_learns_from():
    assert {n: (a.objective, a.head) for n, a in ARCHS.items() if n in OLD_AUX} == {
        "transfer": ("digits", "logic"), "siamese_nows": ("comparison", "mlp"), "siamese_ws": ("comparison", "mlp"),
        "siamese_ws_aux": ("comparison+digits", "mlp"), "siamese_ws_aux_bn": ("comparison+digits", "mlp"),
        "siamese_ws_aux_bn_drop": ("comparison+digits", "mlp"), "ws_bn_aug_bayes": ("digits", "prob")}


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_pairs_that_cannot_learn_their_answer_are_refused(objective, head):
    arch = Arch("x", "X", objective=objective, head=head)
    if (head, objective) in (("mlp", "digits"), ("logic", "comparison")):
        with pytest.raises(UserError, match=f"head {head} with objective {objective}"):
            arch.validate()
    else:
        assert arch.validate() is arch
    with pytest.raises(UserError, match="objective must be one of comparison, comparison\\+digits, digits"):
        Arch("x", "X", objective="aux").validate()


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_the_loss_follows_the_objective(objective):
    g = torch.Generator().manual_seed(0)
    cmp, digits = torch.randn(2, 8, generator=g), torch.randn(2, 8, 2, 10, generator=g)
    classes = torch.randint(0, 10, (2, 8, 2), generator=g)
    cfg = Config(alpha=0.5)
    arch = Arch("x", "X", objective=objective, head="prob")
    obj, l_cmp = losses(arch, cfg, cmp, digits, classes)
    want_cmp = torch.stack([F.binary_cross_entropy_with_logits(cmp[k], target_of(classes[k])) for k in range(2)])
    want_digits = torch.stack([F.cross_entropy(digits[k].reshape(-1, 10), classes[k].reshape(-1)) for k in range(2)])
    want = {"comparison": want_cmp, "digits": want_digits, "comparison+digits": want_cmp + 0.5 * want_digits}
    assert torch.allclose(l_cmp, want_cmp) and torch.allclose(obj, want[objective])


def old_form(arch: dict, name: str) -> dict:
    """An Arch's dict as a spec stored before `objective` held it: `aux` in its place."""
    return {k: v for k, v in arch.items() if k != "objective"} | {"aux": OLD_AUX[name]}


@pytest.mark.parametrize("name", list(OLD_AUX))
def test_an_arch_stored_with_aux_reads_as_its_objective(name):
    new = json.loads(json.dumps(ARCHS[name].to_dict()))
    assert current_arch(old_form(new, name)) == new and objective_of(new) == ARCHS[name].objective
    assert objective_of({"aux": False, "head": "prob"}) == "comparison"  # a prob head without aux: through L_cmp


@pytest.mark.parametrize("name", ["paper", "beyond"])
def test_a_study_stored_before_objective_still_resumes(tmp_path, name):
    """A shipped study as stored before (aux and head in each variant's arch) and as built now (objective) are the
    same study: the store accepts the new spec without a difference, and keeps the file's claims for the report."""
    new = json.loads(json.dumps(studyfile.load(studyfile.shipped(name)).spec()))
    old = {k: v for k, v in new.items() if k not in ("claims", "model")} | {  # nor had it claims or a model
        "variants": [v | {"arch": old_form(v["arch"], v["base"])} for v in new["variants"]]}
    store = Store(tmp_path / "s.sqlite")
    store.ensure_study(name, old)
    store.ensure_study(name, new)
    assert store.study_config(name).get("claims") == new.get("claims")
    assert store.study_config(name).get("model") == new.get("model")
    store.close()


def test_study_files_set_and_sweep_the_objective(tmp_path):
    s = studyfile.load(write_study(tmp_path, """
archs = [{name = "siamese_ws", objective = "comparison+digits", variant = "ws_aux"}, "ws_bn_aug_bayes"]
[sweep]
head = ["prob"]
"""))
    assert [(v.name, v.arch.objective, v.arch.head) for v in s.variants] == [
        ("ws_aux[head=prob]", "comparison+digits", "prob"), ("ws_bn_aug_bayes[head=prob]", "digits", "prob")]
    s = studyfile.load(write_study(tmp_path, 'archs = ["siamese_ws_aux"]\n[sweep]\nobjective = ["comparison", '
                                             '"comparison+digits"]\n'))
    assert [v.arch.objective for v in s.variants] == ["comparison", "comparison+digits"]


BAD = {
    "unknown objective": ('archs = [{name = "siamese_ws", objective = "both"}]\n',
                          "objective must be one of comparison, comparison+digits, digits, not 'both'"),
    "unknown objective in a sweep": ('archs = ["siamese_ws"]\n[sweep]\nobjective = ["digit"]\n',
                                     "[sweep]: objective must be one of"),
    "mlp head on digits": ('archs = [{name = "siamese_ws", objective = "digits"}]\n',
                           "archs.siamese_ws: head mlp with objective digits"),
    "logic head on the comparison": ('archs = [{name = "transfer", objective = "comparison"}]\n',
                                     "archs.transfer: head logic with objective comparison"),
    "a sweep that makes one": ('archs = ["ws_bn_aug_bayes"]\n[sweep]\nhead = ["mlp", "prob"]\n',
                               "head mlp with objective digits: the comparison head would never learn"),
    "aux, the old flag": ('archs = [{name = "siamese_ws", aux = true}]\n', "aux is now objective"),
    "aux in a sweep": ('archs = ["siamese_ws"]\n[sweep]\naux = [true, false]\n', "aux is now objective"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_objectives_in_study_files(tmp_path, case):
    assert_study_refused(tmp_path, *BAD[case])


def test_a_plugin_that_cannot_learn_is_refused_on_registration():
    from digitpairs.spec.registry import register

    with pytest.raises(UserError, match="head mlp with objective digits"):
        register(dataclasses.replace(ARCHS["siamese_ws"], name="never_learns", objective="digits"))
    assert "never_learns" not in ARCHS
