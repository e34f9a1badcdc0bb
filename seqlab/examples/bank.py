"""A bank account updated by several tellers: the classic lost update.

Each teller reads the balance, waits on something slow (a ledger write, here one checkpoint),
then writes back what it read plus its deposit. Tellers start at different moments, so
whether two of them overlap depends on the schedule: some seeds lose a deposit, some do not.
"""

from __future__ import annotations

import trio

from ..trace import emit


class Account:
    """A balance with no protection at all; reads and writes are traced."""

    def __init__(self, balance: int = 0) -> None:
        self.balance = balance

    def read(self) -> int:
        emit("account", "read", balance=self.balance)
        return self.balance

    def write(self, balance: int) -> None:
        emit("account", "write", balance=balance)
        self.balance = balance


async def teller(account: Account, amount: int, warmup: int) -> None:
    """Deposit ``amount`` after ``warmup`` checkpoints of other work, with a racy update."""
    for _ in range(warmup):
        await trio.lowlevel.checkpoint()
    seen = account.read()
    await trio.lowlevel.checkpoint()  # the slow ledger write
    account.write(seen + amount)


async def deposits(tellers: int = 3, amount: int = 1) -> int:
    """Let ``tellers`` tellers deposit ``amount`` each; return the final balance."""
    account = Account()
    async with trio.open_nursery() as nursery:
        for i in range(tellers):
            nursery.start_soon(teller, account, amount, i, name=f"teller-{i}")
    return account.balance


async def checked_deposits(tellers: int = 3) -> None:
    """:func:`deposits`, failing when a deposit was lost (for :func:`seqlab.explore`)."""
    balance = await deposits(tellers)
    if balance != tellers:
        raise AssertionError(f"lost update: balance is {balance}, expected {tellers}")
