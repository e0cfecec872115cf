"""Generative tasks (tasks/generative.py, prompting.py, gsm8k.py, commonsense.py; harness/engine/generate.py):
prompt/answer encoding with the loss on the answer only, left-padded batched greedy generation against a
plain one-prompt-at-a-time greedy loop, answer extraction as the reference code reads it, the hub
recipes on local copies in the hub layout, and whole runs on a tiny Llama."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from harness.config.sections import parse_settings
from harness.engine.generate import generate
from harness.engine.run import execute_run
from harness.errors import HarnessError
from harness.models import load_model, load_tokenizer
from tasks import commonsense, gsm8k, load_task
from tasks.base import Generation, Split
from tasks.generative import label_word
from tasks.prompting import IGNORED, encode_prompts, stop_token_id

LLAMA_QUICK = [
    "model=tiny_llama",
    "task.limit_train=16",
    "task.limit_eval=6",
    "train.max_steps=2",
    "train.batch_size=4",
    "progress=false",
]
CHAT = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def tiny_llama(make_config, *overrides):
    cfg = make_config(*LLAMA_QUICK, *overrides, quick=False)
    settings = parse_settings(cfg)
    torch.manual_seed(0)
    return settings, load_model(settings.model, 0).eval(), load_tokenizer(settings.model)


def words(n: int, start: int = 0) -> str:
    return " ".join(f"word{i}" for i in range(start, start + n))


GENERATION = Generation("Classify: {text} Topic:", 4, lambda text, split: label_word(text), lambda label, split: label)
SPLIT = Split([(words(40),), (words(3),), (words(12, 5),)], ["sport", "tech", "business"])


@pytest.mark.parametrize("chat", [False, True])
def test_the_loss_covers_the_answer_and_its_stop_token_only(make_config, chat):
    _, _, tokenizer = tiny_llama(make_config)
    tokenizer.chat_template = CHAT if chat else None
    encoded = encode_prompts(SPLIT, tokenizer, GENERATION, max_length=24)
    batch = encoded.batch([0, 1, 2], tokenizer.pad_token_id)
    stop = stop_token_id(tokenizer)
    for row, answer in enumerate(SPLIT.labels):
        labelled = batch["labels"][row][batch["labels"][row] != IGNORED].tolist()
        assert labelled == tokenizer(answer, add_special_tokens=False)["input_ids"] + [stop]
        length = int(batch["attention_mask"][row].sum())
        assert length <= 24 and batch["input_ids"][row, length - len(labelled) : length].tolist() == labelled
        prompt = "".join(tokenizer.decode(batch["input_ids"][row, : length - len(labelled)]).lower().split())
        assert prompt.startswith("<|user|>classify:" if chat else "classify:")  # BOS-less tokenizer: none added
        assert prompt.endswith("topic:<|assistant|>" if chat else "topic:")
    # the long text is cut to its first tokens so that prompt + max_new_tokens fit 24; the short ones are whole
    assert int(encoded.prompt_lengths[0]) + GENERATION.max_new_tokens == 24
    assert "word0 word1" in tokenizer.decode(batch["input_ids"][0]) and words(3) in tokenizer.decode(
        batch["input_ids"][1]
    )


def test_a_max_length_without_room_for_the_text_is_one_line(make_config):
    _, _, tokenizer = tiny_llama(make_config)
    with pytest.raises(
        HarnessError,
        match=r"task.max_length=8 leaves no room for the text: the prompt's template takes \d+ tokens and the answer 4",
    ):
        encode_prompts(SPLIT, tokenizer, GENERATION, max_length=8)


def test_the_training_loss_is_cross_entropy_over_answer_tokens_only(make_config):
    _, model, tokenizer = tiny_llama(make_config)
    encoded = encode_prompts(SPLIT, tokenizer, GENERATION, max_length=24)
    batch = encoded.batch([0, 1, 2], tokenizer.pad_token_id)
    with torch.no_grad():
        loss = model(**batch).loss
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    terms = []
    for row in range(3):  # the next-token loss, position by position, where the next token is an answer token
        prompt, end = int(encoded.prompt_lengths[row]), int(batch["attention_mask"][row].sum())
        for position in range(prompt - 1, end - 1):
            terms.append(F.cross_entropy(logits[row, position], batch["input_ids"][row, position + 1]))
    torch.testing.assert_close(loss, torch.stack(terms).mean(), rtol=1e-5, atol=1e-6)


def greedy_one_by_one(model, ids: list[int], stop: int, max_new_tokens: int) -> list[int]:
    """The reference: one unpadded prompt, full forward per token, argmax, no cache."""
    written = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            token = int(model(input_ids=torch.tensor([ids + written])).logits[0, -1].argmax())
            if token == stop:
                break
            written.append(token)
    return written


def test_batched_left_padded_generation_equals_greedy_decoding_of_each_prompt_alone(make_config):
    _, model, tokenizer = tiny_llama(make_config)
    model.double()
    texts = Split([(words(n, n),) for n in (1, 9, 3, 14, 6)], ["a"] * 5)
    generation = Generation("Q: {text} A:", 6, None, None)
    encoded = encode_prompts(texts, tokenizer, generation, max_length=40)
    prompts = encoded.prompt_batch([0, 3], tokenizer.pad_token_id)
    assert prompts["attention_mask"].tolist()[0][:3] == [0, 0, 0] and prompts["attention_mask"][:, -1].tolist() == [
        1,
        1,
    ]
    stop = stop_token_id(tokenizer)
    expected = []
    for i in range(len(texts)):
        start = int(encoded.offsets[i])
        ids = encoded.input_ids[start : start + int(encoded.prompt_lengths[i])].tolist()
        expected.append(tokenizer.decode(greedy_one_by_one(model, ids, stop, 6), skip_special_tokens=True))
    assert any(expected)  # the random model writes something
    for batch_size in (1, 2, 5):
        assert generate(model, encoded, 6, batch_size, tokenizer.pad_token_id, torch.device("cpu"), None) == expected


def test_label_words_are_read_from_the_first_line():
    assert [label_word(t) for t in ("Sport.", ' "tech"\nmore', "", "business!", "*Politics*")] == [
        "sport",
        "tech",
        "",
        "business",
        "politics",
    ]


def test_gsm8k_answers_are_parsed_as_peft_parses_them():
    # PEFT's parse_answer docstring example, its delimiters, fractions vs decimals, and no answer
    assert gsm8k.answer("... = $4^2 = \\boxed{16}$.The answer is: 16") == "16.0"
    assert gsm8k.answer("Natalia sold 48/2 = 24 clips.\n#### 72") == "72.0"
    assert gsm8k.answer("The answer is 20/35.") == gsm8k.answer("The final answer is: 0.5714285714285714")
    assert gsm8k.answer("The answer is: $18.00\nThen more text") == "18.0"
    assert gsm8k.answer("The answer is: 1,000") == "1,000"  # PEFT keeps commas: compared as text
    assert gsm8k.answer("no delimiter 42") == "" and gsm8k.answer("The answer is: 5/0") == "5/0"
    assert gsm8k.answer("The answer is: 3. Check: the answer is wrong. The answer is: 5") == "5.0"  # the last one


def test_commonsense_answers_are_the_first_match_of_the_test_sets_pattern():
    assert commonsense.answer("the correct answer is solution2, not solution1", "piqa") == "solution2"
    assert commonsense.answer("answer1 is false, so true", "boolq") == "false"  # boolq looks for true|false only
    assert commonsense.answer("the correct answer is answer5", "ARC-Easy") == "answer5"
    assert commonsense.answer("the correct answer is ending3", "hellaswag") == "ending3"
    assert commonsense.answer("option3", "winogrande") == ""
    assert (
        commonsense.answer("the correct answer is option2", "validation") == "option2"
    )  # the mixed splits: any pattern


def write_gsm8k_copies(root: Path) -> tuple[Path, Path]:
    """MetaMathQA (one JSON file, as on the hub) and openai/gsm8k (config main, parquet, README configs)."""
    metamath = root / "MetaMathQA"
    metamath.mkdir(parents=True)
    rows = [
        {
            "query": f"What is {i} + {i}?",
            "response": f"{i} + {i} = {2 * i}. The answer is: {2 * i}",
            "type": "GSM_AnsAug",
        }
        for i in range(30)
    ]
    rows.append({"query": "long " * 300, "response": "The answer is: 1", "type": "GSM_AnsAug"})  # over 1,300 characters
    (metamath / "MetaMathQA-395K.json").write_text(json.dumps(rows))
    gsm = root / "gsm8k"
    (gsm / "main").mkdir(parents=True)
    for split, n in (("train", 70), ("test", 9)):
        pd.DataFrame(
            {
                "question": [f"{split} question {i}" for i in range(n)],
                "answer": [f"{i} * 2 = {2 * i}\n#### {2 * i:,}" for i in range(n)],
            }
        ).to_parquet(gsm / "main" / f"{split}-00000-of-00001.parquet")
    (gsm / "README.md").write_text(
        "---\nconfigs:\n- config_name: main\n  data_files:\n  - split: train\n    path: main/train-*\n"
        "  - split: test\n    path: main/test-*\n---\n# gsm8k (test copy)\n"
    )
    return metamath, gsm


def test_the_gsm8k_recipe_loads_peft_splits_from_local_copies(make_config, tmp_path):
    metamath, gsm = write_gsm8k_copies(tmp_path)
    settings = parse_settings(
        make_config("task=gsm8k", f"task.source={metamath}", f"task.eval_source={gsm}", quick=False)
    )
    task = load_task(settings.task)
    assert len(task.splits["train"]) == 30  # the 1,300-character filter drops the long one
    np.random.seed(0)  # PEFT's draw of its 50 validation questions, as data.py writes it
    indices = np.arange(70)
    np.random.shuffle(indices)
    assert [t for (t,) in task.splits["validation"].texts] == [f"train question {i}" for i in indices[:50]]
    assert len(task.splits["test"]) == 9 and task.splits["test"].labels[3] == "3 * 2 = 6\n#### 6"
    assert (
        task.generation.template == "Question: {text} Think step by step.\nAnswer:"
        and task.generation.max_new_tokens == 300
    )


def write_commonsense_copies(root: Path) -> tuple[Path, Path]:
    train = root / "commonsense_170k" / "data"
    train.mkdir(parents=True)
    pd.DataFrame(
        {
            "instruction": [f"Question {i}? Answer format: true/false" for i in range(150)],
            "input": [""] * 150,
            "output": [f"the correct answer is {'true' if i % 2 else 'false'}" for i in range(150)],
            "answer": ["true" if i % 2 else "false" for i in range(150)],
        }
    ).to_parquet(train / "train-00000-of-00001.parquet")
    tests = root / "LLM-Adapters" / "dataset"
    for name, pattern in commonsense.PATTERNS.items():
        (tests / name).mkdir(parents=True)
        choice = pattern.split("|")[-1]
        (tests / name / "test.json").write_text(
            json.dumps(
                [
                    {
                        "instruction": f"{name} item {i}",
                        "input": "",
                        "output": f"the correct answer is {choice}",
                        "answer": choice,
                    }
                    for i in range(5)
                ]
            )
        )
    return train.parent, tests


def test_the_commonsense_recipe_holds_out_120_and_reads_the_eight_test_sets(make_config, tmp_path):
    import datasets

    train, tests = write_commonsense_copies(tmp_path)
    settings = parse_settings(
        make_config("task=commonsense", f"task.source={train}", f"task.eval_source={tests}", quick=False)
    )
    task = load_task(settings.task)
    held = datasets.load_dataset(str(train), split="train").train_test_split(
        test_size=120, shuffle=True, seed=42
    )  # LLM-Adapters' call
    assert [t for (t,) in task.splits["validation"].texts] == held["test"]["instruction"] and len(
        task.splits["train"]
    ) == 30
    assert task.eval_splits == ["validation", *commonsense.PATTERNS] and task.average_of == tuple(commonsense.PATTERNS)
    assert task.splits["piqa"].labels[0] == "the correct answer is solution2"


def test_a_commonsense_run_reports_the_mean_of_the_eight_test_sets(make_config, tmp_path):
    train, tests = write_commonsense_copies(tmp_path)
    record = execute_run(
        make_config(
            *LLAMA_QUICK,
            "task=commonsense",
            f"task.source={train}",
            f"task.eval_source={tests}",
            "task.max_new_tokens=3",
            "method=lora",
            quick=False,
        )
    )
    assert record["status"] == "success", record.get("error")
    final = record["metrics"]["final"]
    assert final["test"]["exact_match"] == pytest.approx(
        np.mean([final[name]["exact_match"] for name in commonsense.PATTERNS])
    )
    table = pd.read_parquet(Path(record["config"]["results_dir"]) / "runs" / record["predictions"]["file"])
    assert (
        table["prediction"] == [commonsense.answer(g, s) for g, s in zip(table["generation"], table["split"])]
    ).all()
    assert (table["generation"] != table["prediction"]).any()  # what was written is kept beside what was read from it


def test_the_reported_score_of_several_test_sets_is_their_mean(tmp_path):
    train, tests = write_commonsense_copies(tmp_path)
    task = commonsense.load(type("Cfg", (), {"source": str(train), "eval_source": str(tests), "max_new_tokens": 4})())
    values = {
        "validation": {"exact_match": 0.9},
        **{name: {"exact_match": i / 10} for i, name in enumerate(commonsense.PATTERNS)},
    }
    assert task.with_report(values)["test"] == {"exact_match": pytest.approx(0.35)} and task.with_report(values)[
        "validation"
    ] == {"exact_match": 0.9}


def test_an_instruction_run_records_its_generations_and_exact_match(make_config, tmp_path):
    record = execute_run(make_config(*LLAMA_QUICK, "task=bbc_news_instruct", "method=lora", quick=False))
    assert record["status"] == "success", record.get("error")
    assert record["metrics"]["primary"] == "exact_match" and record["params"]["head"] == 0
    table = pd.read_parquet(Path(record["config"]["results_dir"]) / "runs" / record["predictions"]["file"])
    assert {"generation", "label", "prediction"} <= set(table.columns)
    assert set(table["label"]) <= {"business", "entertainment", "politics", "sport", "sports", "tech"}
    assert (table["prediction"] == table["generation"].map(label_word)).all()
    final = table[(table["split"] == "test") & (table["step"] == record["predictions"]["steps"]["final"])]
    assert record["metrics"]["final"]["test"]["exact_match"] == pytest.approx(
        (final["label"] == final["prediction"]).mean()
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["model=tiny_bert"],
            "task 'bbc_news_instruct' is generative (the model writes its answer) but model 'tiny_bert' is of kind "
            "'text'",
        ),
        (["method=head"], "method 'head' trains a fresh task head, and generative task 'bbc_news_instruct' has none"),
    ],
)
def test_generative_runs_refuse_encoders_and_head_only_in_one_line(make_config, overrides, message):
    record = execute_run(make_config(*LLAMA_QUICK, "task=bbc_news_instruct", *overrides, quick=False))
    assert record["status"] == "failed" and message in record["error"] and "\n" not in record["error"]


@pytest.mark.parametrize(
    "method",
    [
        "full",
        "lora_ga",
        *(
            pytest.param(m, marks=pytest.mark.slow)
            for m in ("adalora", "dora_dynamic", "rac_lora", "lora_xs", "melora", "peft/vera")
        ),
    ],
)
def test_methods_with_data_inits_step_hooks_and_chains_train_on_a_generative_task(make_config, method):
    record = execute_run(
        make_config(
            *LLAMA_QUICK,
            "task=tweet_sentiment_instruct",
            f"method={method}",
            "train.max_steps=4",
            "task.limit_eval=4",
            quick=False,
        )
    )
    assert record["status"] == "success", record.get("error")
    losses = [row["values"]["loss"] for row in record["metrics"]["curve"] if row["split"] == "train"]
    assert losses and all(np.isfinite(losses)) and record["params"]["head"] == 0


def test_meft_trains_and_generates_through_its_reversible_decoder(make_config):
    """MEFT on the tiny Llama: a generative run trains its adapters only (2 layers × 2·(2·32·8 + 8 + 32)) through the
    reversible stack, and its evaluation generates through the key/value cache."""
    record = execute_run(make_config(*LLAMA_QUICK, "task=bbc_news_instruct", "method=meft", quick=False))
    assert record["status"] == "success", record.get("error")
    assert record["params"]["adapter"] == 2 * 2 * (2 * 32 * 8 + 8 + 32) and record["params"]["head"] == 0
    table = pd.read_parquet(Path(record["config"]["results_dir"]) / "runs" / record["predictions"]["file"])
    assert (table["generation"].str.len() > 0).any()
