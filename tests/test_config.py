import pytest

from pipeline.config_files import apply_overrides, config_from_dict, load_config, parse_override
from pipeline.errors import ConfigError


def test_embedded_configs_load():
    for name in ("diamonds", "health_insurance"):
        cfg = load_config(name)
        assert cfg.name == name and cfg.path.name == "config.yaml"


def test_set_overrides_parse_yaml_values():
    cfg = load_config("diamonds", ["train.epochs=3", "model.mlp.hidden=[8, 4]", "cv.group=null",
                                   "features.columns.carat.type=numeric"])
    assert cfg.train.epochs == 3 and cfg.model.mlp.hidden == [8, 4] and cfg.cv.group is None
    assert cfg.features.columns["carat"].type == "numeric"
    assert parse_override("a.b= 1e-3") == ("a.b", 1e-3)


def test_unknown_set_key_names_nearest_valid_key():
    with pytest.raises(ConfigError, match=r"unknown key 'train.epoch'.*Did you mean: train.epochs"):
        load_config("diamonds", ["train.epoch=3"])
    with pytest.raises(ConfigError, match=r"expected dotted.key=value"):
        apply_overrides({}, ["train.epochs"])


@pytest.mark.parametrize("override, message", [
    ("cv.folds=1", r"config.yaml with --set: cv.folds: Input should be greater than or equal to 2. Got 1"),
    ("cv.scheme=loo", r"cv.scheme: Input should be 'auto', 'kfold', 'stratified', 'group' or "
                      r"'stratified_group'. Got 'loo'"),
    ("metric=gini", r"unknown metric 'gini'. Valid: \['accuracy', 'auc'"),
    ("model.name=xgboost", r"unknown model 'xgboost'. Valid: \[.*'mlp'"),
    ("preprocessing.numeric=zscore", r"unknown numeric preprocessor 'zscore'. Valid: \['auto', 'minmax'"),
    ("preprocessing.categorical=hash", r"unknown categorical encoder 'hash'. Valid: \['auto', 'embedding'"),
    ("train.lr=-1", r"train.lr: Input should be greater than 0"),
    ("model.mlp.dropout=1.5", r"model.mlp.dropout: Input should be less than 1"),
    # Flat model keys of earlier versions name their family's section.
    ("model.hidden=[8]", r"set model.mlp.hidden or model.cnn.hidden or model.backbone.hidden"),
    ("model.filters=[8]", r"set model.cnn.filters"),
    ("model.head_epochs=1", r"set model.backbone.head_epochs"),
    ("model.numeric_embedding=plr", r"set model.mlp.numeric_embedding"),
    ("model.params={max_iter: 5}", r"model.hgb.<argument> or model.linear.<argument>"),
    ("model.member_params={hgb: {max_iter: 5}}", r"model.hgb.<argument> or model.linear.<argument>"),
])
def test_invalid_values_name_field_and_allowed_values(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("diamonds", [override])


def test_malformed_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  target: price\n  id: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: malformed YAML at line \d+"):
        load_config(bad)


def test_unknown_key_in_file_suggests(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("data: {target: y}\ntrain: {epoch: 3}\n")
    with pytest.raises(ConfigError, match=r"c.yaml: train.epoch: unknown key. Did you mean: train.epochs"):
        load_config(f)


@pytest.mark.parametrize("text, message", [
    ("data: {id: id}\n", r"data.target: required but not set"),
    # A config file of an earlier version, with the model's keys flat.
    ("data: {target: y}\nmodel: {name: mlp, hidden: [64], dropout: 0.1}\n",
     r"model.hidden moved into its model family's section: set model.mlp.hidden"),
])
def test_a_config_file_error_names_the_field(tmp_path, text, message):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(f)


def test_unknown_competition_lists_valid():
    with pytest.raises(ConfigError, match=r"--comp nope: .*Valid: \['diamonds', 'health_insurance'"):
        load_config("nope")


def test_params_overlay_is_checked_and_merged(tmp_path):
    overlay = tmp_path / "best.yaml"
    overlay.write_text("train: {lr: 0.01}\nmodel: {mlp: {hidden: [32]}}\n")
    cfg = load_config("diamonds", params=overlay)
    assert cfg.train.lr == 0.01 and cfg.model.mlp.hidden == [32] and cfg.train.epochs == 100
    overlay.write_text("train: {learning_rate: 0.01}\n")
    with pytest.raises(ConfigError, match=r"best.yaml: unknown key 'train.learning_rate'"):
        load_config("diamonds", params=overlay)


def test_config_from_dict_defaults():
    cfg = config_from_dict({"data": {"target": "y"}})
    assert cfg.cv.folds == 5 and cfg.model.name == "realmlp" and cfg.task is None


def test_each_model_reads_its_own_section():
    from pipeline.config import BackboneConfig, CNNConfig, MLPConfig, ModelConfig, RealMLPConfig, TabMConfig
    from pipeline.models import BACKBONES, MODELS, model_section

    cfg = ModelConfig(mlp={"hidden": [3]}, cnn={"hidden": [5]}, backbone={"hidden": [7]}, hgb={"max_iter": 9})
    kinds = {"mlp": MLPConfig, "realmlp": RealMLPConfig, "tabm": TabMConfig, "cnn": CNNConfig,
             **{b: BackboneConfig for b in BACKBONES}}
    for name in MODELS:
        if name in kinds:
            assert type(model_section(cfg, name)) is kinds[name], name
    assert model_section(cfg, "mlp").hidden == [3] and model_section(cfg, "cnn").hidden == [5]
    assert model_section(cfg, "resnet50").hidden == [7] and model_section(cfg, "hgb") == {"max_iter": 9}
