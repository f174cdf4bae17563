import re

import optuna
import pytest

from ecab_tune.search.space import SPACES_DIR, SpaceError, load_space

VALID = """
defaults: {model: resnet8, attention: ecab, max_epochs: 3}
params:
  attention.fusion: {type: choice, values: [sum, concat]}
  attention.project: {type: choice, values: [true, false], when: {attention.fusion: concat}}
  lr: {type: loguniform, low: 0.01, high: 0.5}
"""


def write(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(p.stem for p in SPACES_DIR.glob("*.yaml")))
def test_builtin_spaces_load_and_resolve(name):
    space = load_space(name)
    assert space.params
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    model, train = space.resolve(space.sample(trial), num_classes=10, in_chans=1, epochs=2, seed=0)
    assert model.build() is not None and train.epochs == 2


def test_conditional_parameter_is_drawn_only_when_its_condition_holds(tmp_path):
    space = load_space(write(tmp_path, VALID))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(30):
        params = space.sample(study.ask())
        seen.add(params["attention.fusion"])
        assert ("attention.project" in params) == (params["attention.fusion"] == "concat")
    assert seen == {"sum", "concat"}


def test_condition_on_the_attention_choice(tmp_path):
    space = load_space(
        write(
            tmp_path,
            """
defaults: {model: resnet8, attention: none}
params:
  attention: {type: choice, values: [none, se, ecab]}
  attention.reduction: {type: choice, values: [4, 8], when: {attention: [se, ecab]}}
""",
        )
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    for _ in range(20):
        params = space.sample(study.ask())
        assert ("attention.reduction" in params) == (params["attention"] != "none")
        model, _ = space.resolve(params, num_classes=10, in_chans=1, epochs=1, seed=0)
        model.build()


@pytest.mark.parametrize(
    "text,key,words",
    [
        ("bogus: 1\n" + VALID, "bogus", "unknown key"),
        (
            VALID.replace("max_epochs: 3", "max_epochs: 3, colour: red"),
            "defaults.colour",
            "unknown key",
        ),
        (
            VALID + "  dropout: {type: uniform, low: 0, high: 1}\n",
            "params.dropout",
            "unknown parameter",
        ),
        (
            VALID.replace("values: [sum, concat]", "values: []"),
            "params.attention.fusion.values",
            "non-empty",
        ),
        (VALID.replace("low: 0.01, high: 0.5", "low: 0.5, high: 0.01"), "params.lr", "must be <"),
        (VALID.replace("low: 0.01", "low: 0.0"), "params.lr.low", "above 0"),
        (VALID.replace("low: 0.01", "low: 1e-2"), "params.lr.low", "finite number"),
        (
            VALID.replace("attention: ecab", "attention: se"),
            "params.attention.fusion",
            "takes no option 'fusion'",
        ),
        (
            VALID.replace("when: {attention.fusion: concat}", "when: {lr: 0.1}"),
            "params.attention.project.when.lr",
            "defined above",
        ),
        (
            VALID + "  batch_size: {type: choice, values: [1, 64]}\n",
            "params.batch_size",
            "batch_size=1",
        ),
        (VALID.replace("model: resnet8", "model: resnet9"), "defaults.model", "allowed: "),
        (VALID.replace("type: loguniform", "type: normal"), "params.lr.type", "allowed: "),
    ],
)
def test_invalid_spaces_name_file_key_and_remedy(tmp_path, text, key, words):
    path = write(tmp_path, text)
    with pytest.raises(SpaceError) as err:
        load_space(path)
    message = str(err.value)
    assert str(path) in message and key in message and words in message


def test_option_under_an_attention_choice_needs_a_condition(tmp_path):
    path = write(
        tmp_path,
        """
defaults: {model: resnet8}
params:
  attention: {type: choice, values: [se, eca]}
  attention.reduction: {type: choice, values: [4, 8]}
""",
    )
    with pytest.raises(SpaceError, match="'eca' takes no option 'reduction'"):
        load_space(path)


def test_unknown_space_name_lists_builtins():
    with pytest.raises(SpaceError, match=r"built-in spaces: .*bridge"):
        load_space("nope")


def test_grid_needs_unconditional_choices(tmp_path):
    assert load_space("baselines").grid() == {
        "attention": ["none", "se", "cbam", "eca", "bridge", "ecab"]
    }
    with pytest.raises(SpaceError, match="grid searcher"):
        load_space(write(tmp_path, VALID)).grid()


def test_an_attention_without_options_drops_the_spaces_fixed_ones(tmp_path):
    space = load_space(
        write(
            tmp_path,
            """
defaults: {model: resnet8, attention: ecab, attention.fusion: concat}
params:
  attention: {type: choice, values: [none, ecab_head, ecab]}
""",
        )
    )
    for attention in ("none", "ecab_head", "ecab"):
        model, _ = space.resolve(
            {"attention": attention}, num_classes=10, in_chans=1, epochs=1, seed=0
        )
        assert model.attention_kwargs == ({"fusion": "concat"} if attention == "ecab" else {})


@pytest.mark.parametrize(
    "text,key,words",
    [
        (VALID + "scheduler: {grace_period: 0}\n", "scheduler.grace_period", "greater than"),
        (VALID.replace("max_epochs: 3", "max_epochs: 3.5"), "defaults.max_epochs", "integer"),
        (VALID.replace("{type: loguniform, low: 0.01, high: 0.5}", "0.1"), "params.lr", "mapping"),
        (
            VALID.replace("max_epochs: 3", "max_epochs: 3, train: {lr: 20}"),
            "defaults.train",
            "lr=20",
        ),
        (
            VALID.replace("max_epochs: 3", "max_epochs: 3, train: {epochs: 2}"),
            "defaults.train.epochs",
            "unknown key",
        ),
        (
            VALID.replace(
                "max_epochs: 3", "max_epochs: 3, attention.reduction: 3, attention.hue: 1"
            ),
            "defaults.attention.hue",
            "attention 'ecab' takes no option 'hue'",
        ),
        (
            VALID.replace("max_epochs: 3", "max_epochs: 3, attention_kwargs: {fusion: sum}"),
            "defaults.attention_kwargs",
            "unknown key",
        ),
        (VALID.replace("searcher: optuna", "") + "  lr2: {}\n", "params.lr2", "unknown parameter"),
        ("- a list\n", "space.yaml: expected a mapping", "got list"),
        (
            VALID.replace("when: {attention.fusion: concat}", "when: {attention.fusion: sumx}"),
            "params.attention.project.when.attention.fusion",
            "attention.fusion never takes 'sumx'; it takes 'sum', 'concat'",
        ),
        (
            VALID + "  momentum: {type: uniform, low: 0.8, high: 0.9, when: {lr: 0.9}}\n",
            "params.momentum.when.lr",
            "lr never takes 0.9; it takes values in [0.01, 0.5]",
        ),
        # Optuna stores only single values; a list drew with a warning and broke the report.
        (
            VALID + "  attention.layers: {type: choice, values: [all, [-1, -2]]}\n",
            "params.attention.layers.values",
            "[-1, -2] is no single value",
        ),
        (
            VALID + "  momentum: {type: uniform, low: 0.8, high: 0.9, when: {lr: []}}\n",
            "params.momentum.when.lr",
            "lists no value",
        ),
        (
            VALID.replace("max_epochs: 3", "max_epochs: 3, metric: accuracy"),
            "defaults.metric",
            "'accuracy' is not allowed; allowed: train_loss, train_acc, val_loss, val_acc",
        ),
        # Values the recipe or the model refuses, found at load time, not in every trial.
        (
            VALID.replace("max_epochs: 3", "max_epochs: 2, train: {warmup_epochs: 5}"),
            "defaults.train",
            "warmup_epochs=5",
        ),
        (
            VALID + "  warmup_epochs: {type: uniform, low: 0, high: 4}\n",
            "params.warmup_epochs",
            "expected 0 <= warmup_epochs <= epochs",
        ),
        (VALID.replace("[sum, concat]", "[sum, bogus]"), "params.attention.fusion", "'bogus'"),
        (
            VALID + "  attention.layers: {type: choice, values: [block, nonsense]}\n",
            "params.attention.layers",
            "nonsense",
        ),
        (
            VALID + "  attention.reduction: {type: int, low: 0, high: 8}\n",
            "params.attention.reduction",
            "reduction=0",
        ),
        (
            VALID.replace("max_epochs: 3", "max_epochs: 3, attention.fusion: bogus"),
            "defaults",
            "'bogus'",
        ),
        (VALID + "  width: {type: uniform, low: -1, high: 2}\n", "params", "width=-1"),
        # Recipe values of the wrong type: TrainConfig checks ranges only, so these failed in
        # every trial (a float batch size, a precision typo) or trained as True ('false').
        (
            VALID + "  batch_size: {type: uniform, low: 32, high: 256}\n",
            "params.batch_size",
            "batch_size=32.0 is invalid: expected an integer",
        ),
        (
            VALID.replace("max_epochs: 3", "max_epochs: 3, train: {precision: bf15}"),
            "defaults.train",
            "precision='bf15' is invalid: expected auto, bf16, fp16 or fp32",
        ),
        (
            VALID + "  nesterov: {type: choice, values: ['true', 'false']}\n",
            "params.nesterov",
            "nesterov='true' is invalid: expected true or false",
        ),
        (
            VALID.replace("max_epochs: 3", "max_epochs: 3, train: {weight_decay: .inf}"),
            "defaults.train",
            "weight_decay=inf is invalid: expected a finite number",
        ),
        (
            "defaults: {model: resnet8, attention: ecab, attention.fusion: sum}\n"
            "params: {attention: {type: choice, values: [ecab, se]}}\n",
            "defaults.attention.fusion",
            "attention 'se' takes no option 'fusion'",
        ),
    ],
)
def test_other_invalid_spaces_are_one_line_naming_the_key(tmp_path, text, key, words):
    path = write(tmp_path, text)
    with pytest.raises(SpaceError) as err:
        load_space(path)
    message = str(err.value)
    assert str(path) in message and key in message and words in message and "\n" not in message


BOOL = "{type: choice, values: [false, true]"
CLASH = VALID + f"  compile: {BOOL}}}\n  cuda_graphs: {BOOL}}}\n"


@pytest.mark.parametrize(
    "text,words",
    [
        (CLASH, "params.cuda_graphs: cuda_graphs=True with compile=True: cuda_graphs=True is"),
        (
            VALID.replace("max_epochs: 3", "max_epochs: 3, train: {nesterov: false}")
            + f"  nesterov: {BOOL}}}\n  momentum: {{type: uniform, low: 0.0, high: 0.9}}\n",
            "params.momentum: momentum=0.0 with nesterov=True: nesterov=True is invalid",
        ),
    ],
)
def test_recipe_values_that_clash_in_one_trial_are_refused(tmp_path, text, words):
    with pytest.raises(SpaceError, match=re.escape(words)):
        load_space(write(tmp_path, text))


@pytest.mark.parametrize(
    "extra",
    [
        # Conditional on a third parameter taking other values.
        f"  compile: {BOOL}, when: {{attention.fusion: sum}}}}\n"
        f"  cuda_graphs: {BOOL}, when: {{attention.fusion: concat}}}}\n",
        # Conditional on the other one.
        f"  compile: {BOOL}}}\n  cuda_graphs: {BOOL}, when: {{compile: [false]}}}}\n",
        f"  nesterov: {BOOL}}}\n"
        "  momentum: {type: choice, values: [0.0, 0.9], when: {nesterov: [false]}}\n",
    ],
)
def test_recipe_values_never_drawn_together_may_clash(tmp_path, extra):
    names = [line.split(":")[0].strip() for line in extra.splitlines()]
    assert [p.name for p in load_space(write(tmp_path, VALID + extra)).params][-2:] == names


def test_an_int_range_of_a_recipe_value_draws_integers(tmp_path):
    space = load_space(write(tmp_path, VALID + "  batch_size: {type: int, low: 32, high: 256}\n"))
    params = space.sample(optuna.create_study().ask())
    _, train = space.resolve(params, num_classes=10, in_chans=1, epochs=3, seed=0)
    assert isinstance(train.batch_size, int) and 32 <= train.batch_size <= 256


@pytest.mark.parametrize(
    "given,mode",
    [
        ("metric: val_loss", "min"),
        ("metric: val_acc", "max"),
        ("metric: val_loss, mode: max", "max"),
    ],
)
def test_a_space_metric_without_a_mode_is_optimised_its_natural_way(tmp_path, given, mode):
    # mode defaulted to max whatever the metric: `metric: val_loss` maximised the loss.
    text = VALID.replace("max_epochs: 3", f"max_epochs: 3, {given}")
    assert load_space(write(tmp_path, text)).defaults.mode == mode


def test_a_budget_other_than_the_spaces_must_fit_its_recipe(tmp_path):
    space = load_space(
        write(tmp_path, VALID + "  warmup_epochs: {type: uniform, low: 0, high: 2}\n")
    )
    space.check_budget(2)
    with pytest.raises(SpaceError, match=r"params.warmup_epochs: .*\(at --max-epochs 1\)"):
        space.check_budget(1)


def test_yaml_aliases_and_undecodable_files_are_refused_naming_the_file(tmp_path):
    # Nine levels of nine aliases each: 387 million values from a few hundred bytes.
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    bomb = VALID + "  attention.layers: {type: choice, values: [*a9]}\n" + "\n".join(levels)
    for content, words in (
        (bomb.encode(), r"YAML aliases \(\*name\) are not allowed"),
        (VALID.encode() + b"# \xff\xfe\n", "cannot read it"),
    ):
        path = tmp_path / "space.yaml"
        path.write_bytes(content)
        with pytest.raises(SpaceError, match=words) as err:
            load_space(path)
        assert str(path) in str(err.value)
