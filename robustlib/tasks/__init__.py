"""Tasks: what the classifier reads, and where an attack may go.

A task is data, in the style of lm-evaluation-harness: a frozen :class:`Task` holds the
instructions, the content template, the answer prompt, the two class strings, where the
attack goes, the data source and a version that travels with every :class:`Example`
(and so with every result). Tasks live in the :data:`TASKS` registry together with a
loader; :func:`register_task` adds your own and :func:`load_examples` is the one entry
point that turns a task name into examples.

The text a classifier sees is always ``instructions + content + answer_prompt``. The
attacker aims at the wrong class (``example.target = 1 - example.label``) and its string
is placed by :meth:`Example.attack_split`:

* ``"slot"`` tasks (PasswordMatch, WordLength, generated here): an empty slot right
  after the content, before the answer prompt; the position is fixed.
* ``"chunk"`` tasks (Spam, IMDB, Helpful, Harmless, from the Hugging Face hub): the
  attack goes inside an attackable chunk of the content at a position in [0, 1]
  (1.0 suffix, 0.0 prefix, 0.9 "infix90"), see :meth:`Example.attack_split`.

Built-in tasks, as name: source, class strings for labels 0 / 1, attack kind. Their
prompts are verbatim from the code released with the paper this lab reproduces, so
that results stay comparable with the paper's:

* ``password_match``: generated, " DENIED" / " GRANTED", slot
* ``word_length``: generated, " FIRST" / " SECOND", slot
* ``spam``: ``SetFit/enron_spam``, " HAM" / " SPAM", chunk (the email)
* ``imdb``: ``stanfordnlp/imdb``, " NEGATIVE" / " POSITIVE", chunk (the review)
* ``helpful``: ``Anthropic/hh-rlhf`` helpful-base, " FIRST" / " SECOND", chunk (both
  conversations)
* ``harmless``: ``Anthropic/hh-rlhf`` harmless-base, " FIRST" / " SECOND", chunk (both
  conversations)
* ``strongreject`` (generative, :mod:`robustlib.tasks.prompts`): forbidden requests for
  a chat model, from a hub copy of the StrongREJECT CSV, a local copy, or ``"builtin"``
  stand-ins; validation only; the attack goes inside the request

Generated tasks draw their words from :func:`word_list`, split once and for all into a
train pool and a validation pool (:func:`word_pool`) so that no validation word is
ever seen in training.

The modules, one concept each:

* :mod:`robustlib.tasks.spec`: :class:`Task`, :class:`Example` and the attack-position rules;
* :mod:`robustlib.tasks.registry`: the registry, :func:`get_task`, :func:`load_examples`;
* :mod:`robustlib.tasks.generated`: the word list, PasswordMatch and WordLength;
* :mod:`robustlib.tasks.hub`: Spam, IMDB, Helpful, Harmless and loading from the hub or
  local files;
* :mod:`robustlib.tasks.prompts`: generative tasks (StrongREJECT) and their prompts;
* :mod:`robustlib.tasks.chat`: a prompt inside a chat model's template.

Importing this package registers the built-in tasks, generated first then hub, in the
order listed above.
"""

from __future__ import annotations

from robustlib.tasks.generated import PASSWORD_MATCH, WORD_LENGTH, WORD_LIST_SIZE, word_list, word_pool
from robustlib.tasks.hub import HARMLESS, HELPFUL, IMDB, SPAM
from robustlib.tasks.prompts import BUILTIN, STAND_IN_PROMPTS, STRONGREJECT, Prompt, PromptTask, load_prompts
from robustlib.tasks.registry import (
    _LOADERS,  # noqa: F401  (the loader registry, for tests and advanced use)
    SPLITS,
    TASK_KINDS,
    TASKS,
    Loader,
    UnknownTaskError,
    class_balance,
    get_task,
    load_examples,
    register_task,
    to_hf_dataset,
)
from robustlib.tasks.spec import ANSWER_PROMPT, ATTACK_KINDS, GENERATED, Example, Task

register_task(STRONGREJECT, load_prompts)

__all__ = [
    "ANSWER_PROMPT",
    "ATTACK_KINDS",
    "BUILTIN",
    "GENERATED",
    "HARMLESS",
    "HELPFUL",
    "IMDB",
    "PASSWORD_MATCH",
    "Prompt",
    "PromptTask",
    "SPAM",
    "SPLITS",
    "STAND_IN_PROMPTS",
    "STRONGREJECT",
    "TASKS",
    "TASK_KINDS",
    "WORD_LENGTH",
    "WORD_LIST_SIZE",
    "Example",
    "Loader",
    "Task",
    "UnknownTaskError",
    "class_balance",
    "get_task",
    "load_examples",
    "register_task",
    "to_hf_dataset",
    "word_list",
    "word_pool",
]
