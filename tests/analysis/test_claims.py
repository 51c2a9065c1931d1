import re

import pytest

from digitpairs import UserError
from digitpairs.analysis import claims as verdicts
from digitpairs.analysis.compare import compare
from digitpairs.report import claims as report_claims
from digitpairs.report.comparisons import words
from digitpairs.spec import studyfile


def row(name: str, counts: list[int], missing=()) -> dict:
    return {"arch": name, "label": name.upper(), "missing": list(missing),
            "correct": {r: (c, 1000) for r, c in enumerate(counts) if r not in missing}}


ROWS = [row("good", [950, 955, 960, 948, 957, 962]), row("twin", [951, 954, 961, 947, 958, 961]),
        row("poor", [900, 910, 905, 899, 903, 908])]


def verdict(claim: dict, rows=ROWS) -> dict:
    return verdicts.check(claim, rows, compare(rows, 6))


def test_verdicts_follow_the_holm_corrected_paired_evidence():
    better = verdict({"text": "t", "better": "good", "worse": "poor"})
    assert better["verdict"] == "confirmed" and better["p"] < 0.05 and better["ahead"] == 6
    assert better["diff"] == pytest.approx(307 / 6000) and better["lo"] < better["diff"] < better["hi"]
    reverse = verdict({"text": "t", "better": "poor", "worse": "good"})
    assert reverse["verdict"] == "contradicted" and reverse["diff"] == pytest.approx(-307 / 6000) and reverse["ahead"] == 0
    assert (reverse["lo"], reverse["hi"]) == pytest.approx((-better["hi"], -better["lo"]))
    assert verdict({"text": "t", "better": "good", "worse": "twin"})["verdict"] == "not confirmed"
    assert verdict({"text": "t", "same": ["good", "twin"]})["verdict"] == "confirmed"
    assert verdict({"text": "t", "same": ["poor", "good"]})["verdict"] == "contradicted"


def test_a_same_claim_needs_equivalence_not_only_no_significance():
    """Noisy differences of a few points, not significant: no evidence of no difference. Confirmed only where the
    95% interval lies within the margin."""
    rows = [row("a", [950, 900, 960, 905, 955, 910]), row("b", [910, 950, 900, 955, 905, 950])]
    noisy = verdict({"text": "t", "same": ["a", "b"]}, rows)
    assert noisy["p"] > 0.05 and noisy["lo"] < -0.01 and noisy["verdict"] == "not confirmed"
    assert verdict({"text": "t", "same": ["a", "b"], "margin": 10}, rows)["verdict"] == "confirmed"
    assert "margin +-10 points" in report_claims.blocks([{"text": "t", "same": ["a", "b"], "margin": 10}], rows,
                                                   compare(rows, 6))[1][2][0][2]
    twins = verdict({"text": "t", "same": ["good", "twin"], "margin": 0.05})  # interval +-0.1 points
    assert twins["verdict"] == "not confirmed"
    close = [row("a", [950, 951, 949, 952, 950, 951]), row("b", [947, 949, 946, 948, 947, 949])]  # 0.28 points
    tiny = verdict({"text": "t", "same": ["a", "b"]}, close)  # significant, and well within the margin
    assert tiny["p"] < 0.05 and tiny["verdict"] == "confirmed"
    assert verdict({"text": "t", "same": ["a", "b"], "margin": 0.1}, close)["verdict"] == "contradicted"


def test_an_undefined_t_test_checks_nothing():
    same_gap = [row("a", [950, 960, 970]), row("b", [940, 950, 960])]  # 1 point in every round: t is 1/0
    (comp,) = compare(same_gap, 3)
    c = verdicts.check({"text": "t", "better": "a", "worse": "b"}, same_gap, [comp])
    assert c["verdict"] == "not checked" and "undefined" in c["why"] and "+1.00 points" in c["why"]
    same = verdicts.check({"text": "t", "same": ["a", "b"], "margin": 2}, same_gap, [comp])  # the interval decides
    assert same["verdict"] == "confirmed" and "p undefined (the same difference in every round)" in (
        report_claims.COLUMNS[2].cell(same))
    assert "ahead of B by the same 1.0 points in every round" in words(comp)
    one = [row("a", [950]), row("b", [900])]
    (comp,) = compare(one, 1)
    assert "2 rounds or more" in comp["skip"]
    assert verdicts.check({"text": "t", "same": ["a", "b"]}, one, [comp])["verdict"] == "not checked"


def test_claims_the_study_cannot_check():
    absent = verdict({"text": "t", "better": "good", "worse": "siamese_ws"})
    assert absent["verdict"] == "not checked" and "siamese_ws not in this study" in absent["why"]
    unrun = verdicts.check({"text": "t", "better": "good", "worse": "siamese_ws"}, ROWS, compare(ROWS, 6),
                           {"siamese_ws"})
    assert unrun["why"] == "siamese_ws has no finished run yet"
    rows = ROWS[:2] + [row("poor", [900, 910, 905, 899, 903, 908], missing=[2])]
    gap = verdict({"text": "t", "better": "good", "worse": "poor"}, rows)
    assert gap["verdict"] == "not checked" and "lacks round(s) [2]" in gap["why"]


def test_the_claims_section():
    blocks = report_claims.blocks([{"text": "Good beats poor.", "better": "good", "worse": "poor"}], ROWS,
                             compare(ROWS, 6))
    (_, head, cells), = [b for b in blocks if b[0] == "table"]
    assert head == ["Claim", "Compared", "Evidence in this study", "Verdict"]
    assert cells == [["Good beats poor.", "good better than poor",
                      cells[0][2], "confirmed"]] and cells[0][2].startswith("+5.12 points (95% CI +4.71 to +5.52), p < 0.001, ahead in 6 of 6")
    assert report_claims.blocks(None, ROWS, []) == [] and report_claims.blocks([], ROWS, []) == []  # stored before claims


def test_shipped_studies_carry_their_claims():
    paper = studyfile.load(studyfile.shipped("paper"))
    assert len(paper.claims) == 5 and paper.spec()["claims"] == list(paper.claims)
    assert {"same": ["siamese_ws_aux_bn", "siamese_ws_aux_bn_drop"]}.items() <= paper.claims[3].items()
    aux = studyfile.load(studyfile.shipped("aux_loss"))
    assert [c["better"] for c in aux.claims] == ["siamese_ws_aux[aux_loss=ce]", "siamese_ws_aux_bn[aux_loss=ce]"]
    assert "claims" not in studyfile.load(studyfile.shipped("alpha")).spec()  # no claims, the spec as before
    fewer = studyfile.build(studyfile.read(studyfile.shipped("paper")) | {"archs": ["transfer"]}, "paper.toml")
    assert fewer.claims == paper.claims  # `reproduce --archs`: the claims stay, the report says which it cannot check


A = 'archs = ["siamese_ws", "siamese_ws_aux"]\n'
BAD = {
    "not an array": (A + 'claims = 3\n', "claims must be an array of tables"),
    "no text": (A + '[[claims]]\nbetter = "siamese_ws_aux"\nworse = "siamese_ws"\n', "text must be one printable"),
    "text two lines": (A + '[[claims]]\nbetter = "siamese_ws_aux"\nworse = "siamese_ws"\ntext = "a\\nb"\n',
                       "text must be one printable line"),
    "typo in a key": (A + '[[claims]]\nbeter = "siamese_ws_aux"\nworse = "siamese_ws"\ntext = "t"\n',
                      "unknown key 'beter'"),
    "better alone": (A + '[[claims]]\nbetter = "siamese_ws_aux"\ntext = "t"\n', "a claim has better and worse"),
    "both kinds": (A + '[[claims]]\nbetter = "siamese_ws_aux"\nworse = "siamese_ws"\nsame = ["a", "b"]\n'
                       'text = "t"\n', "a claim has better and worse, or same"),
    "same of three": (A + '[[claims]]\nsame = ["siamese_ws", "siamese_ws_aux", "transfer"]\ntext = "t"\n',
                      "same must be a list of two variant names"),
    "unknown variant": (A + '[[claims]]\nbetter = "siamese_wz"\nworse = "siamese_ws"\ntext = "t"\n',
                        "'siamese_wz' is no variant of this study nor a registered architecture"),
    "a variant against itself": (A + '[[claims]]\nsame = ["siamese_ws", "siamese_ws"]\ntext = "t"\n',
                                 "compares two different variants"),
    "a name not a string": (A + '[[claims]]\nbetter = 3\nworse = "siamese_ws"\ntext = "t"\n',
                            "3 is no variant of this study"),
    "a name a list": (A + '[[claims]]\nbetter = ["siamese_ws"]\nworse = "siamese_ws_aux"\ntext = "t"\n',
                      "['siamese_ws'] is no variant of this study"),
    "a margin on a better claim": (A + '[[claims]]\nbetter = "siamese_ws_aux"\nworse = "siamese_ws"\nmargin = 1\n'
                                       'text = "t"\n', "margin belongs to a same claim"),
    "a margin of nan": (A + '[[claims]]\nsame = ["siamese_ws", "siamese_ws_aux"]\nmargin = nan\ntext = "t"\n',
                        "a number of points in (0, 100]"),
    "a margin as text": (A + '[[claims]]\nsame = ["siamese_ws", "siamese_ws_aux"]\nmargin = "1"\ntext = "t"\n',
                         "a number of points in (0, 100], not '1'"),
    "a margin of 0": (A + '[[claims]]\nsame = ["siamese_ws", "siamese_ws_aux"]\nmargin = 0\ntext = "t"\n',
                      "a number of points in (0, 100], not 0"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_claims_in_study_files(tmp_path, case):
    text, expected = BAD[case]
    path = tmp_path / "study.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=re.escape(expected)) as e:
        studyfile.load(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
