"""How a fine-tune run is named in the report and when a finished run is reused."""

from ropescale.study.runner import settings_difference, strategy_of
from ropescale.train import FinetuneConfig


def test_strategy_names_pose_lora_and_passkey_rows():
    assert strategy_of(FinetuneConfig()) == ""
    assert strategy_of(FinetuneConfig(pose_window=256, lora_rank=8, passkey_share=0.5)) == \
        "PoSE 256, LoRA r8, 50% passkey rows"


def test_a_setting_an_older_run_did_not_save_counts_as_its_default():
    saved = {"steps": 200, "lr": 3e-4}                   # written before passkey_share existed
    assert settings_difference(saved, {"steps": 200, "lr": 3e-4, "passkey_share": 0.0}) is None
    assert "passkey_share None (the recipe now says 0.5)" in settings_difference(
        saved, {"steps": 200, "lr": 3e-4, "passkey_share": 0.5})
    assert settings_difference(saved, {"steps": 100, "lr": 3e-4, "output": "elsewhere"}).startswith("steps 200")
