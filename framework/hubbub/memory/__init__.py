"""What is built on the memory store besides conversations: per-user quotas
(:mod:`~hubbub.memory.quotas`), long-term memory (:mod:`~hubbub.memory.facts`) and the sweeper
that enforces expiry and retention (:mod:`~hubbub.memory.sweeper`)."""

from hubbub.memory.facts import LongTermMemory
from hubbub.memory.quotas import Quotas
from hubbub.memory.sweeper import Sweeper

__all__ = ["LongTermMemory", "Quotas", "Sweeper"]
