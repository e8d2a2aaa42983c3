import json

import pytest

from gan_core.errors import ConfigError
from gan_core.training.config import PRESETS, OptimizerConfig, RunConfig, override, parse_ratio, preset


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_round_trips_through_json(name):
    cfg = preset(name)
    again = RunConfig.from_json(cfg.to_json())
    assert again == cfg
    assert json.loads(again.to_json()) == json.loads(cfg.to_json())


def test_seed_preset_is_the_blog():
    cfg = preset("blog")
    assert (cfg.model.arch, cfg.model.depth, cfg.model.width, cfg.model.channels, cfg.model.head) == \
        ("blog", 9, 1.0, 3, "bn_sigmoid")
    assert cfg.g_optim == cfg.d_optim == OptimizerConfig("Adadelta", 1e-3)
    assert (cfg.schedule.d_steps, cfg.schedule.g_steps, cfg.schedule.batch_size) == (1, 5, 100)
    assert cfg.schedule.loss == "bce" and cfg.schedule.reuse_noise
    assert cfg.data.train_limit == 900


def test_defaults_are_one_channel_and_fresh_noise():
    cfg = RunConfig()
    assert cfg.model.channels == 1 and not cfg.schedule.reuse_noise


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        RunConfig().steps = 3  # type: ignore[misc]


@pytest.mark.parametrize("text,expected", [("1:5", (1, 5)), ("5:1", (5, 1)), ("2:3", (2, 3))])
def test_parse_ratio(text, expected):
    assert parse_ratio(text) == expected


@pytest.mark.parametrize("text", ["0:1", "1:0", "abc", "1:5:2", "-1:2", "1.5:2", ""])
def test_bad_ratio_names_the_valid_form(text):
    with pytest.raises(ConfigError, match="D:G with positive integers"):
        parse_ratio(text)


@pytest.mark.parametrize("changes,match", [
    ({"model.arch": "resnet"}, "choose one of: blog, dcgan"),
    ({"model.arch": []}, r"arch \[\] is not valid; choose one of: blog, dcgan"),  # unhashable: no old name to look up
    ({"model.depth": 3}, "depth must be an integer from 4 to 9"),
    ({"model.depth": 10}, "depth must be an integer from 4 to 9"),
    ({"model.width": 0}, "width must be a finite number > 0"),
    ({"model.channels": 2}, "channels"),
    ({"g_optim.name": "Adamx"}, "not in torch.optim"),
    ({"d_optim.name": "SGD", "d_optim.kwargs": {"betas": [0.5, 0.9]}}, "SGD rejects"),
    ({"schedule.d_steps": 0}, "d_steps must be an integer >= 1"),
    ({"schedule.loss": "hinge"}, "bce, bce_logits"),
    ({"steps": -5}, "steps must be an integer >= 1"),
    ({"data.source": "cifar"}, "embedded, mnist, folder"),
    ({"data.source": "folder"}, "needs a root folder"),
    ({"device.device": "tpu"}, "auto, cpu, cuda"),
    ({"nope": 1}, "unknown config key"),
])
def test_bad_values_fail_on_construction_with_the_valid_choices(changes, match):
    with pytest.raises(ConfigError, match=match):
        override(RunConfig(), changes)


def test_optimizer_names_are_canonicalised():
    assert OptimizerConfig("adam", 1e-3).name == "Adam"
    assert OptimizerConfig("rmsprop", 1e-3).name == "RMSprop"


def test_unknown_json_key_is_rejected():
    d = RunConfig().to_dict()
    d["model"]["colour"] = 1
    with pytest.raises(ConfigError, match="unknown ModelConfig key"):
        RunConfig.from_dict(d)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="choose one of: default, blog, dcgan, dcgan-cpu"):
        preset("nope")


def test_the_old_names_of_the_blog_say_the_new_one():
    with pytest.raises(ConfigError, match="preset 'seed' is now 'blog'"):
        preset("seed")
    with pytest.raises(ConfigError, match="arch 'seed' is now 'blog'"):
        override(RunConfig(), {"model.arch": "seed"})
