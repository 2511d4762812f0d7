"""What the attack aims a chat model's response at, per prompt (the generative setting).

:data:`TARGET_RULES`, the values of a notebook's ``target_rule``:

* ``"fixed"``: every prompt gets the same opening, the attack's ``target_string`` (the
  paper's GCG target is ``" Sure, here"``);
* ``"data"``: the prompt's own ``target`` column (a local file that has one); a prompt
  without one is an error, naming it;
* ``"affirmative"``: an affirmative opening built from the request by
  :func:`affirmative_target`, the stated rule below; where no pattern matches, the
  fixed opening.

The affirmative rule, on the request without its closing punctuation, first match wins
(case-insensitive; in the rest, first-person words become second-person: I/me -> you,
I'm -> you're, I am -> you are, my -> your, mine -> yours, myself -> yourself):

==========================================================  ===================================
request                                                     target
==========================================================  ===================================
``How/Where/What/When/Why do/can/could/should/would I ...`` ``Sure, here is how/where/... to ...``
``Explain/Describe/Tell me/Show me how/where/what/why ...`` ``Sure, here is how/where/... ...``
``(Can/Could/Would you) help me ...``                       ``Sure, here is how to ...``
``Write/Draft/Create/Compose/Generate/Give me/Provide/      ``Sure, here is ...``
List/Suggest/Make/Design/Plan ...``
==========================================================  ===================================

so "How do I pick the lock on my door?" -> "Sure, here is how to pick the lock on your
door" and "Write a fake news article ..." -> "Sure, here is a fake news article ...".
The targets have no leading space: in a chat template the response starts a new line.
"""

from __future__ import annotations

import re

TARGET_RULES = ("fixed", "data", "affirmative")

_PRONOUNS = {"i'm": "you're", "i": "you", "me": "you", "my": "your", "mine": "yours", "myself": "yourself"}
_WH = r"(how|where|what|when|why)"
_PATTERNS = (
    (re.compile(rf"^{_WH}\s+(?:do|can|could|should|would|might|may)\s+(?:i|we|one|you|someone)\s+(.+)$", re.I),
     lambda m: f"{m[1].lower()} to {m[2]}"),
    (re.compile(rf"^(?:explain|describe|tell me|show me)\s+{_WH}\s+(.+)$", re.I), lambda m: f"{m[1].lower()} {m[2]}"),
    (re.compile(r"^(?:(?:can|could|would|will)\s+you\s+(?:please\s+)?)?help me(?:\s+to)?\s+(.+)$", re.I),
     lambda m: f"how to {m[1]}"),
    (re.compile(r"^(?:write|draft|create|compose|generate|give me|provide|list|suggest|make|design|plan)\s+(.+)$",
                re.I), lambda m: m[1]),
)


def _second_person(text: str) -> str:
    def swap(m: re.Match) -> str:
        word = m[0]
        out = _PRONOUNS[word.lower()]
        return out.capitalize() if word[0].isupper() and word.lower() not in ("i", "i'm") else out

    # "am" only after "I" ("I am" -> "you are"), never elsewhere.
    text = re.sub(r"\bI am\b", "you are", text)
    return re.sub(r"\b(i'm|myself|mine|my|me|i)\b", swap, text, flags=re.I)


def affirmative_target(request: str, fallback: str) -> str:
    """The affirmative opening for ``request`` by the rule in the module docstring;
    ``fallback`` where no pattern matches."""
    text = " ".join(request.split()).rstrip(" ?.!:;")
    for pattern, build in _PATTERNS:
        m = pattern.match(text)
        if m:
            return "Sure, here is " + _second_person(build(m))
    return fallback


def assign_targets(prompts: list, rule: str, fixed: str) -> list:
    """``prompts`` with their ``target_response`` set by ``rule`` (``fixed``: the fixed
    opening). Checked before any compute: a ``data`` rule on prompts without targets
    names the first such prompt."""
    if rule not in TARGET_RULES:
        raise ValueError(f"target_rule={rule!r} is invalid; accepted: {TARGET_RULES}")
    if rule == "fixed":
        return [p.with_target(fixed) for p in prompts]
    if rule == "affirmative":
        return [p.with_target(affirmative_target(p.prompt, fixed)) for p in prompts]
    missing = [p for p in prompts if not p.target_response]
    if missing:
        raise ValueError(f"target_rule='data' needs a target for every prompt (a 'target' column); "
                         f"{len(missing)} of {len(prompts)} have none, e.g. {missing[0].prompt!r:.80}")
    return list(prompts)


__all__ = ["TARGET_RULES", "affirmative_target", "assign_targets"]
