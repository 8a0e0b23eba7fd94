"""Tests of the false-hit guard's rules, features and committed verifier."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cache_service.errors import SettingsError
from cache_service.guard import (
    BELOW_VERIFIED_COSINE,
    MANIFEST_FILE,
    REORDERED_WORDS,
    WEIGHTS_FILE,
    FalseHitGuard,
    GuardArtifactError,
    Verifier,
    build_guard,
    default_verifier_dir,
)
from cache_service.normalize import normalize_query
from cache_service.pair_features import (
    FEATURE_NAMES,
    pair_features,
    tokenize,
    words_reordered,
)
from cache_service.testing import settings_for_tests

# (stored query, incoming query, reason the guard must give)
DIFFERENT_MEANING = [
    ("Convert 5 km to miles", "Convert 50 km to miles", "number_mismatch"),
    ("Cancel my subscription", "Don't cancel my subscription", "negation_mismatch"),
    ("Cancel my subscription", "Do not cancel my subscription", "negation_mismatch"),
    ("How do I turn on dark mode?", "How do I turn off dark mode?", "opposite_words"),
    ("How do I lock my card?", "How do I unlock my card?", "opposite_words"),
    ("Book a table for 2 at 7pm", "Book a table for 4 at 7pm", "number_mismatch"),
]
# (stored query, incoming query) pairs that one answer serves.
SAME_MEANING = [
    ("How do I convert 5 km to miles?", "Convert 5 km into miles"),
    ("Who wrote Hamlet?", "Who is the author of Hamlet?"),
    ("and in Rust?", "and how about Rust?"),
]
# NOTE: the committed verifier rejects these paraphrases. Its threshold was chosen
# for at most 0.5 % false hits on paws_wiki, whose negatives share almost every
# word, so a high word overlap lowers the score (see docs/false_hit_guard.md).
SAME_MEANING_REJECTED = [
    ("Convert 5 km to miles", "convert five km to miles"),
    ("Cancel my subscription", "Please cancel my subscription"),
    ("Show me flights from Paris to London", "Flights from Paris to London"),
    ("What is the capital of France?", "Tell me the capital of France"),
]
SWAPPED_ROLES = [
    ("Show me flights from Paris to London", "Show me flights from London to Paris"),
    ("Does Alice owe Bob money?", "Does Bob owe Alice money?"),
]


def check(guard: FalseHitGuard, stored: str, incoming: str, cosine: float = 0.9):
    return guard.check(tokenize(incoming), normalize_query(stored), cosine)


@pytest.fixture(scope="module")
def guard() -> FalseHitGuard:
    return FalseHitGuard(Verifier.load(default_verifier_dir()))


@pytest.mark.parametrize(("stored", "incoming", "reason"), DIFFERENT_MEANING)
def test_rules_reject_meaning_changes(stored: str, incoming: str, reason: str) -> None:
    decision = check(FalseHitGuard(None), stored, incoming)
    assert not decision.accepted
    assert decision.reason == reason


@pytest.mark.parametrize(("stored", "incoming"), SAME_MEANING + SAME_MEANING_REJECTED)
def test_rules_accept_paraphrases(stored: str, incoming: str) -> None:
    assert check(FalseHitGuard(None), stored, incoming).accepted


@pytest.mark.parametrize(("stored", "incoming"), SAME_MEANING)
def test_verifier_accepts_paraphrases(
    guard: FalseHitGuard, stored: str, incoming: str
) -> None:
    decision = check(guard, stored, incoming)
    assert decision.accepted, decision


# NOTE: the verifier rejects these true paraphrases (docs/false_hit_guard.md,
# "Known limitations"); the rules alone must still accept them.
@pytest.mark.parametrize(("stored", "incoming"), SAME_MEANING_REJECTED)
def test_rules_accept_close_paraphrases(stored: str, incoming: str) -> None:
    assert check(FalseHitGuard(None), stored, incoming).accepted


@pytest.mark.parametrize(("stored", "incoming"), SWAPPED_ROLES)
def test_guard_rejects_swapped_roles(
    guard: FalseHitGuard, stored: str, incoming: str
) -> None:
    decision = check(guard, stored, incoming, cosine=0.98)
    assert not decision.accepted
    assert decision.reason == REORDERED_WORDS
    # The verifier alone would reject them too.
    assert guard.verifier is not None
    features = pair_features(
        0.98, tokenize(normalize_query(stored)), tokenize(incoming)
    )
    assert guard.verifier.score(features) < guard.verifier.threshold


@pytest.mark.parametrize(("stored", "incoming", "reason"), DIFFERENT_MEANING)
def test_verifier_guard_rejects_meaning_changes(
    guard: FalseHitGuard, stored: str, incoming: str, reason: str
) -> None:
    assert not check(guard, stored, incoming).accepted


def test_features_flag_reordered_words() -> None:
    features = pair_features(
        0.97,
        tokenize("flights from paris to london"),
        tokenize("flights from London to Paris"),
    )
    named = dict(zip(FEATURE_NAMES, features, strict=True))
    assert named["same_words_reordered"] == 1.0
    assert named["order_discordance"] > 0.0
    assert named["token_jaccard"] == 1.0


def test_features_flag_name_missing_from_stored_query() -> None:
    features = pair_features(
        0.9,
        tokenize("what is the capital of france"),
        tokenize("What is the capital of Spain"),
    )
    named = dict(zip(FEATURE_NAMES, features, strict=True))
    assert named["name_mismatch"] == 1.0


@pytest.mark.parametrize(
    "query",
    [
        "How can I learn Python quickly?",
        "Can I use Python if I'm new to coding?",
        "Thanks. How do I learn Python?",
        "Where can I learn Python? Which book?",
    ],
)
def test_tokenize_skips_capitalized_function_words(query: str) -> None:
    assert tokenize(query).names == frozenset({"python"})


def test_tokenize_keeps_names_that_spell_function_words() -> None:
    names = tokenize("Can I move from the US to the UK in May?").names
    assert names == frozenset({"us", "uk", "may"})


def test_pronoun_i_sets_no_name_mismatch() -> None:
    features = pair_features(
        0.9,
        tokenize("how do you learn python quickly"),
        tokenize("How can I learn Python quickly?"),
    )
    named = dict(zip(FEATURE_NAMES, features, strict=True))
    assert named["name_mismatch"] == 0.0


def test_verifier_scores_pronouns_i_and_we_alike(guard: FalseHitGuard) -> None:
    stored = "how do you learn python quickly"
    with_i = check(guard, stored, "How can I learn Python quickly?")
    with_we = check(guard, stored, "How can we learn Python quickly?")
    assert with_i.score == pytest.approx(with_we.score)
    assert with_i.accepted == with_we.accepted


def test_tokenize_counts_contracted_negation() -> None:
    tokens = tokenize("I don't know and can't tell")
    assert tokens.negations == 2
    assert "do" in tokens.words


def test_committed_verifier_loads() -> None:
    verifier = Verifier.load(default_verifier_dir())
    assert len(verifier.coefficients) == len(FEATURE_NAMES)
    assert 0.0 <= verifier.threshold <= 1.0
    assert verifier.version.startswith("guard-")


def copy_artifact(tmp_path: Path) -> Path:
    target = tmp_path / "guard"
    shutil.copytree(default_verifier_dir(), target)
    return target


def test_tampered_weights_are_rejected(tmp_path: Path) -> None:
    directory = copy_artifact(tmp_path)
    weights = json.loads((directory / WEIGHTS_FILE).read_text())
    weights["threshold"] = 0.0
    (directory / WEIGHTS_FILE).write_text(json.dumps(weights))
    with pytest.raises(GuardArtifactError, match=r"weights_sha256.*python -m training"):
        Verifier.load(directory)


def test_manifest_feature_version_mismatch_is_rejected(tmp_path: Path) -> None:
    directory = copy_artifact(tmp_path)
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    manifest["feature_version"] = 999
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(GuardArtifactError, match=r"feature_version.*Retrain it with"):
        Verifier.load(directory)


def test_missing_manifest_is_rejected(tmp_path: Path) -> None:
    directory = copy_artifact(tmp_path)
    (directory / MANIFEST_FILE).unlink()
    with pytest.raises(GuardArtifactError, match=r"training\.guard_verifier"):
        Verifier.load(directory)


def test_guard_setting_off_builds_no_guard() -> None:
    assert build_guard(settings_for_tests(false_hit_guard="off")) is None


def test_guard_setting_rules_builds_no_verifier() -> None:
    built = build_guard(settings_for_tests(false_hit_guard="rules"))
    assert built is not None
    assert built.verifier is None


def test_guard_setting_rejects_unknown_mode() -> None:
    with pytest.raises(SettingsError, match="false_hit_guard must be one of"):
        settings_for_tests(false_hit_guard="strict")


def test_guard_setting_on_by_default() -> None:
    built = build_guard(settings_for_tests())
    assert built is not None
    assert built.verifier is not None


@pytest.mark.parametrize(
    ("stored", "incoming"),
    [
        ("How many ounces in a pound?", "How many pounds in an ounce?"),
        ("How many ounces in a pound?", "How many pounds in one ounce?"),
        ("Is the Moon bigger than the Earth?", "Is the Earth bigger than the Moon?"),
    ],
)
def test_reordered_words_are_rejected(
    guard: FalseHitGuard, stored: str, incoming: str
) -> None:
    assert words_reordered(tokenize(normalize_query(stored)), tokenize(incoming))
    decision = check(guard, stored, incoming, cosine=0.95)
    assert not decision.accepted
    assert decision.reason == REORDERED_WORDS


def test_rules_mode_rejects_reordered_words() -> None:
    decision = check(
        FalseHitGuard(None),
        "How many ounces in a pound?",
        "How many pounds in an ounce?",
    )
    assert decision.reason == REORDERED_WORDS


@pytest.mark.parametrize(
    ("stored", "incoming"),
    [
        ("How many ounces in a pound?", "how many ounces in a pound"),
        ("What are cats?", "What is a cat?"),
        ("Convert 5 km to miles", "How do I convert 5 km to miles?"),
    ],
)
def test_same_order_is_not_reordered(stored: str, incoming: str) -> None:
    assert not words_reordered(tokenize(normalize_query(stored)), tokenize(incoming))


def test_candidate_below_verified_cosine_is_rejected(guard: FalseHitGuard) -> None:
    assert guard.verifier is not None
    assert guard.verifier.min_cosine == pytest.approx(0.8)

    decision = check(guard, "How do I cancel my subscription?", "Renew it", 0.75)

    assert not decision.accepted
    assert decision.reason == BELOW_VERIFIED_COSINE


def test_rules_mode_has_no_cosine_floor() -> None:
    decision = check(FalseHitGuard(None), "Who wrote Hamlet?", "Hamlet's author", 0.5)
    assert decision.accepted


@pytest.mark.parametrize("value", [None, "0.8", 1.5])
def test_manifest_without_valid_min_cosine_is_rejected(
    tmp_path: Path, value: object
) -> None:
    directory = copy_artifact(tmp_path)
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    manifest["training_min_cosine"] = value
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(
        GuardArtifactError, match=r"training_min_cosine must be a number from 0 to 1"
    ):
        Verifier.load(directory)
