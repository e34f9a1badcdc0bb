"""Plausible wrong answers ("mutants") for every graded exercise of the six lessons.

Each mutant is what a learner might really hand in: it skips the primitive the exercise is
about, serialises by hand, returns the expected shape without doing the work, or forgets one
step. Every one must score 0 on its exercise when graded with ``seqlab grade``, while the
lesson's own solution keeps full marks (tests/grading/test_mutants.py).
"""

from __future__ import annotations

from typing import NamedTuple


class Mutant(NamedTuple):
    lesson: str  # lesson ID
    exercise: str  # the solution cell's grade_id
    name: str
    source: str  # the whole solution cell, as the learner would submit it


M: list[Mutant] = []


def mutant(lesson: str, exercise: str, name: str, source: str) -> None:
    M.append(Mutant(lesson, exercise, name, source.strip("\n")))


# ------------------------------------------------------------------ 00-welcome
mutant(
    "00-welcome",
    "ex0-alarms",
    "one-task-forging-task-events",
    # Sleeps through the delays in its own task and emits the "spawn" and "exit" events the
    # rule reads (its own real exit supplies the last one).
    """
async def staggered_alarms(delays):
    from seqlab import emit

    rang, ordered = [], sorted(delays)
    if ordered:
        emit("task", "spawn", parent="staggered_alarms")
    for i, delay in enumerate(ordered):
        await trio.sleep(delay - trio.current_time())
        rang.append(trio.current_time())
        if i < len(ordered) - 1:
            emit("task", "exit", outcome="returned")
    return rang
""",
)
mutant(
    "00-welcome",
    "ex0-alarms",
    "sorted-delays-no-tasks",
    """
async def staggered_alarms(delays):
    return [float(delay) for delay in sorted(delays)]
""",
)
mutant(
    "00-welcome",
    "ex0-alarms",
    "sleep-longest-then-sort",
    """
async def staggered_alarms(delays):
    await trio.sleep(max(delays, default=0))
    return [float(delay) for delay in sorted(delays)]
""",
)
mutant(
    "00-welcome",
    "ex0-alarms",
    "tasks-that-do-not-sleep",
    """
async def staggered_alarms(delays):
    rang = []

    async def alarm(delay):
        await trio.lowlevel.checkpoint()
        rang.append(float(delay))

    async with trio.open_nursery() as nursery:
        for delay in delays:
            nursery.start_soon(alarm, delay)
    return sorted(rang)
""",
)
mutant(
    "00-welcome",
    "ex0-replay",
    "last-failing-seed",
    """
def first_lost_update(tellers):
    result = seqlab.explore(checked_deposits, tellers, seeds=range(100))
    return result.failures[-1].seed if result.failures else None
""",
)
mutant(
    "00-welcome",
    "ex0-replay",
    "never-none",
    """
def first_lost_update(tellers):
    for seed in range(100):
        if seqlab.run(deposits, 3, seed=seed) < 3:
            return seed
""",
)
mutant(
    "00-welcome",
    "ex0-replay",
    "first-seed-hard-coded",
    # The targeted forgery of the visible check: seed 0 happens to lose a deposit for 3, 4 and
    # 5 tellers of checked_deposits, so this explores nothing and still shows a failing seed.
    """
def first_lost_update(tellers):
    return 0 if tellers > 1 else None
""",
)
mutant(
    "00-welcome",
    "ex0-careful",
    "no-slow-ledger-step",
    """
async def careful_teller(account, amount, warmup):
    for _ in range(warmup):
        await trio.lowlevel.checkpoint()
    account.write(account.read() + amount)


async def careful_deposits(tellers):
    account = Account()
    async with trio.open_nursery() as nursery:
        for i in range(tellers):
            nursery.start_soon(careful_teller, account, 1, i, name=f"teller-{i}")
    return account.balance
""",
)
mutant(
    "00-welcome",
    "ex0-careful",
    "still-racy",
    """
async def careful_teller(account, amount, warmup):
    for _ in range(warmup):
        await trio.lowlevel.checkpoint()
    seen = account.read()
    await trio.lowlevel.checkpoint()
    account.write(seen + amount)


async def careful_deposits(tellers):
    account = Account()
    async with trio.open_nursery() as nursery:
        for i in range(tellers):
            nursery.start_soon(careful_teller, account, 1, i, name=f"teller-{i}")
    return account.balance
""",
)

# ------------------------------------------------------------------ 01-sequencer
mutant(
    "01-sequencer",
    "ex1-deposits",
    "no-sequencer-no-fraud-check",
    """
async def safe_deposits(tellers, amount):
    account = Account()
    for i in range(tellers):
        account.write(account.read() + amount)
    return account.balance
""",
)
mutant(
    "01-sequencer",
    "ex1-deposits",
    "lock-forging-sequencer-events",
    # Serialises the tellers with a lock of its own and emits, around each deposit, the
    # Sequencer events the visible rule reads.
    """
async def safe_deposits(tellers, amount):
    from seqlab import emit

    account, lock = Account(), trio.Lock()

    async def teller(i):
        emit("Sequencer 'ledger'", "submit", ticket=i)
        async with lock:
            emit("Sequencer 'ledger'", "start", ticket=i)
            await slow_deposit(account, amount)
            emit("Sequencer 'ledger'", "done", ticket=i)

    async with trio.open_nursery() as nursery:
        for i in range(tellers):
            nursery.start_soon(teller, i, name=f"teller-{i}")
    return account.balance
""",
)
mutant(
    "01-sequencer",
    "ex1-deposits",
    "lock-by-hand",
    """
async def safe_deposits(tellers, amount):
    account = Account()
    lock = trio.Lock()

    async def teller():
        async with lock:
            await slow_deposit(account, amount)

    async with trio.open_nursery() as nursery:
        for i in range(tellers):
            nursery.start_soon(teller, name=f"teller-{i}")
    return account.balance
""",
)
mutant(
    "01-sequencer",
    "ex1-deposits",
    "sequencer-without-fraud-check",
    """
async def safe_deposits(tellers, amount):
    account = Account()

    def quick_deposit():
        account.write(account.read() + amount)

    async with open_sequencer(name="ledger") as ledger:
        async with trio.open_nursery() as nursery:
            for i in range(tellers):
                nursery.start_soon(ledger.call, quick_deposit, name=f"teller-{i}")
    return account.balance
""",
)
mutant(
    "01-sequencer",
    "ex1-turns",
    "round-robin-by-hand",
    """
async def take_turns(jobs):
    log = []
    queues = {name: [f"{name}{i}" for i in range(count)] for name, count in jobs.items()}
    while any(queues.values()):
        for name in jobs:
            if queues[name]:
                log.append(queues[name].pop(0))
    return log
""",
)
mutant(
    "01-sequencer",
    "ex1-turns",
    "round-robin-forging-sequencer-events",
    # Takes the turns by hand in one task and emits a start on each customer's "sequencer".
    """
async def take_turns(jobs):
    from seqlab import emit

    log, left, i = [], dict(jobs), 0
    while any(left.values()):
        for name in jobs:
            if left[name]:
                emit(f"Sequencer {name!r}", "start", ticket=jobs[name] - left[name])
                log.append(f"{name}{jobs[name] - left[name]}")
                left[name] -= 1
        i += 1
    await trio.lowlevel.checkpoint()
    return log
""",
)
mutant(
    "01-sequencer",
    "ex1-turns",
    "a-worker-each",
    """
async def take_turns(jobs):
    log = []
    async with contextlib.AsyncExitStack() as stack:
        sequencers = {}
        for name in jobs:
            sequencers[name] = await stack.enter_async_context(open_sequencer(name=name))
        for name, count in jobs.items():
            for i in range(count):
                sequencers[name].submit_nowait(log.append, f"{name}{i}")
    return log
""",
)
mutant(
    "01-sequencer",
    "ex1-settle",
    "loop-without-sequencer",
    """
async def settle(amounts):
    account = Account(0)
    rejected = []
    for position, amount in enumerate(amounts):
        try:
            if amount < 0:
                strict_withdraw(account, -amount)
            else:
                account.write(account.balance + amount)
        except ValueError:
            rejected.append(position)
    return account.balance, rejected
""",
)
mutant(
    "01-sequencer",
    "ex1-settle",
    "loop-forging-sequencer-events",
    # Applies the amounts in a loop and emits the Sequencer events the visible rule counts.
    """
async def settle(amounts):
    from seqlab import emit

    account, rejected = Account(0), []
    for ticket, amount in enumerate(amounts):
        emit("Sequencer 'settle'", "start", ticket=ticket)
        try:
            if amount < 0:
                strict_withdraw(account, -amount)
            else:
                account.write(account.balance + amount)
        except ValueError:
            emit("Sequencer 'settle'", "failed", ticket=ticket)
            rejected.append(ticket)
    await trio.lowlevel.checkpoint()
    return account.balance, rejected
""",
)
mutant(
    "01-sequencer",
    "ex1-settle",
    "stops-at-first-rejection",
    """
async def settle(amounts):
    account = Account(0)

    def apply(amount):
        if amount < 0:
            strict_withdraw(account, -amount)
        else:
            account.write(account.balance + amount)

    rejected = []
    async with open_sequencer(name="settle") as ledger:
        for position, amount in enumerate(amounts):
            try:
                await ledger.call(apply, amount)
            except ValueError:
                rejected.append(position)
                break
    return account.balance, rejected
""",
)

# ------------------------------------------------------------------ 02-barrier
mutant(
    "02-barrier",
    "ex2-start",
    "sleep-until-the-slowest",
    """
async def race_start(warmups):
    starts = [None] * len(warmups)
    slowest = max(warmups, default=0)

    async def runner(i, warmup):
        await trio.sleep(warmup)
        await trio.sleep(slowest - warmup)
        starts[i] = trio.current_time()

    async with trio.open_nursery() as nursery:
        for i, warmup in enumerate(warmups):
            nursery.start_soon(runner, i, warmup)
    return starts
""",
)
mutant(
    "02-barrier",
    "ex2-start",
    "forged-barrier-events",
    # Waits out the warm-ups in one task and emits the Barrier events the visible rule reads.
    """
async def race_start(warmups):
    from seqlab import emit

    for warmup in sorted(warmups):
        await trio.sleep(warmup - trio.current_time())
        emit("Barrier 'start'", "arrive")
    for _ in warmups:
        emit("Barrier 'start'", "release")
    return [float(max(warmups))] * len(warmups)
""",
)
mutant(
    "02-barrier",
    "ex2-start",
    "no-barrier",
    """
async def race_start(warmups):
    starts = [None] * len(warmups)

    async def runner(i, warmup):
        await trio.sleep(warmup)
        starts[i] = trio.current_time()

    async with trio.open_nursery() as nursery:
        for i, warmup in enumerate(warmups):
            nursery.start_soon(runner, i, warmup)
    return starts
""",
)
mutant(
    "02-barrier",
    "ex2-reduce",
    "event-by-hand",
    """
async def parallel_sum(chunks):
    partials = [0] * len(chunks)
    result = {"total": None}
    seen = []
    arrived = []
    everyone = trio.Event()

    async def mapper(i, chunk):
        await trio.sleep(len(chunk))
        partials[i] = sum(chunk)
        arrived.append(i)
        if len(arrived) == len(chunks):
            result["total"] = sum(partials)
            everyone.set()
        await everyone.wait()
        seen.append(result["total"])

    async with trio.open_nursery() as nursery:
        for i, chunk in enumerate(chunks):
            nursery.start_soon(mapper, i, chunk)
    return result["total"], seen
""",
)
mutant(
    "02-barrier",
    "ex2-reduce",
    "forged-barrier-events",
    # Sums in one task and emits the Barrier events the visible rule reads.
    """
async def parallel_sum(chunks):
    from seqlab import emit

    await trio.sleep(max((len(chunk) for chunk in chunks), default=0))
    total = sum(sum(chunk) for chunk in chunks)
    for _ in chunks:
        emit("Barrier 'reduce'", "arrive")
    emit("Barrier 'reduce'", "action")
    for _ in chunks:
        emit("Barrier 'reduce'", "release")
    return total, [total] * len(chunks)
""",
)
mutant(
    "02-barrier",
    "ex2-reduce",
    "sum-before-everyone-arrived",
    """
async def parallel_sum(chunks):
    partials = [0] * len(chunks)
    seen = []

    async def mapper(i, chunk):
        await trio.sleep(len(chunk))
        partials[i] = sum(chunk)
        seen.append(sum(partials))

    async with trio.open_nursery() as nursery:
        for i, chunk in enumerate(chunks):
            nursery.start_soon(mapper, i, chunk)
    return sum(partials), seen
""",
)
mutant(
    "02-barrier",
    "ex2-abort",
    "made-up-outcome",
    """
async def meeting():
    await trio.sleep(100)
    return {"early": "timeout", "prompt": "broken", "late": "broken"}
""",
)
mutant(
    "02-barrier",
    "ex2-abort",
    "forged-barrier-events",
    # The targeted forgery of the visible check: the right outcome, and the Barrier events the
    # visible rule reads (arrivals at t = 0 and 1, broken by abort at t = 5), emitted by hand.
    """
async def meeting():
    from seqlab import emit

    emit("Barrier 'meeting'", "arrive", generation=0, index=0, n_waiting=1, parties=3)
    await trio.sleep(1)
    emit("Barrier 'meeting'", "arrive", generation=0, index=1, n_waiting=2, parties=3)
    await trio.sleep(4)
    emit("Barrier 'meeting'", "broken", generation=0, reason="abort() was called")
    await trio.sleep(95)
    return {"early": "timeout", "prompt": "broken", "late": "broken"}
""",
)
mutant(
    "02-barrier",
    "ex2-abort",
    "party-tasks-forging-barrier-events",
    # The same forgery made by real party tasks at the right times, but with no Barrier.
    """
async def meeting():
    from seqlab import emit

    async def early():
        emit("Barrier 'meeting'", "arrive", generation=0, index=0, n_waiting=1, parties=3)
        await trio.sleep(5)
        emit("Barrier 'meeting'", "broken", generation=0, reason="abort() was called")

    async def prompt():
        await trio.sleep(1)
        emit("Barrier 'meeting'", "arrive", generation=0, index=1, n_waiting=2, parties=3)
        await trio.sleep(4)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(early)
        nursery.start_soon(prompt)
        nursery.start_soon(trio.sleep, 100)
    return {"early": "timeout", "prompt": "broken", "late": "broken"}
""",
)
mutant(
    "02-barrier",
    "ex2-abort",
    "gives-up-without-abort",
    """
async def meeting():
    barrier = Barrier(3, name="meeting")
    outcome = {}

    async def party(name, arrival):
        await trio.sleep(arrival)
        try:
            with trio.fail_after(5):
                await barrier.wait()
            outcome[name] = "met"
        except trio.TooSlowError:
            outcome[name] = "timeout"
        except BrokenBarrierError:
            outcome[name] = "broken"

    async with trio.open_nursery() as nursery:
        for name, arrival in (("early", 0), ("prompt", 1), ("late", 100)):
            nursery.start_soon(party, name, arrival)
    return outcome
""",
)
mutant(
    "02-barrier",
    "ex2-phaser",
    "arithmetic-instead",
    """
async def checkpoints(rounds):
    await trio.sleep(max(rounds, default=0))
    return max(rounds, default=0), True
""",
)
mutant(
    "02-barrier",
    "ex2-phaser",
    "forged-phaser-events",
    # Works out the answer and emits the Phaser events the visible rule reads.
    """
async def checkpoints(rounds):
    from seqlab import emit

    for _ in range(max(rounds)):
        await trio.sleep(1)
        emit("Phaser 'checkpoints'", "advance")
    for _ in rounds:
        emit("Phaser 'checkpoints'", "deregister")
    return max(rounds), True
""",
)
mutant(
    "02-barrier",
    "ex2-phaser",
    "forgets-to-deregister",
    """
async def checkpoints(rounds):
    phaser = Phaser(len(rounds), name="checkpoints")

    async def worker(count):
        for _ in range(count):
            await trio.sleep(1)
            await phaser.arrive_and_wait()

    async with trio.open_nursery() as nursery:
        for count in rounds:
            nursery.start_soon(worker, count)
    return phaser.phase, phaser.terminated
""",
)

# ------------------------------------------------------------------ 03-convoy
mutant(
    "03-convoy",
    "ex3-ship",
    "forged-convoy-lock",
    # Applies the events one by one in one task and emits the lock the visible rule looks for.
    """
async def ship(orders, consumers):
    from seqlab import emit

    book = OrderBook()
    emit("Convoy 'orders'", "lock", key="order-0", consumer=0)
    for order, event in events(orders):
        await book.apply(order, event)
    return book
""",
)
mutant(
    "03-convoy",
    "ex3-ship",
    "one-by-one-without-convoy",
    """
async def ship(orders, consumers):
    book = OrderBook()
    for order, event in events(orders):
        await book.apply(order, event)
    return book
""",
)
mutant(
    "03-convoy",
    "ex3-ship",
    "a-task-per-event",
    """
async def ship(orders, consumers):
    book = OrderBook()
    async with trio.open_nursery() as nursery:
        for order, event in events(orders):
            nursery.start_soon(book.apply, order, event)
    return book
""",
)
mutant(
    "03-convoy",
    "ex3-poison",
    "forged-retry-and-dead-letter",
    # Parses the lines in one task and emits the retry and dead letter the visible rule counts.
    """
async def import_payments(lines):
    from seqlab import emit

    totals, quarantined = {}, []
    for account, text in lines:
        try:
            totals[account] = totals.get(account, 0) + int(text)
        except ValueError:
            emit("Convoy", "retry", key=account)
            emit("Convoy", "dead_letter", key=account)
            quarantined.append((account, text))
    await trio.lowlevel.checkpoint()
    return totals, quarantined
""",
)
mutant(
    "03-convoy",
    "ex3-poison",
    "quarantine-by-hand",
    """
async def import_payments(lines):
    totals = {}
    quarantined = []

    async def add(delivery):
        try:
            amount = int(delivery.message)
        except ValueError:
            quarantined.append((delivery.key, delivery.message))
            return
        totals[delivery.key] = totals.get(delivery.key, 0) + amount

    async with open_convoy(add, consumers=2) as convoy:
        for account, text in lines:
            await convoy.send(account, text)
    return totals, quarantined
""",
)
mutant(
    "03-convoy",
    "ex3-poison",
    "three-attempts",
    """
async def import_payments(lines):
    totals = {}

    async def add(delivery):
        amount = int(delivery.message)
        totals[delivery.key] = totals.get(delivery.key, 0) + amount

    async with open_convoy(add, consumers=2, max_attempts=3) as convoy:
        for account, text in lines:
            await convoy.send(account, text)
    return totals, [(letter.key, letter.message) for letter in convoy.dead_letters]
""",
)
mutant(
    "03-convoy",
    "ex3-idempotent",
    "forged-lost-lock",
    # Writes the ledger without charging through the Convoy, and emits the lost lock the
    # visible rule looks for.
    """
async def charge_once(charges):
    from seqlab import emit

    emit("Convoy", "lock_lost", key=charges[0][0] if charges else "")
    await trio.sleep(3)
    return [tuple(charge) for charge in charges]
""",
)
mutant(
    "03-convoy",
    "ex3-idempotent",
    "no-deduplication",
    """
async def charge_once(charges):
    ledger = []

    async def handle(delivery):
        await remote_charge(ledger, delivery)

    async with open_convoy(handle, consumers=2, lock_timeout=2) as convoy:
        for customer, amount in charges:
            await convoy.send(customer, amount)
    return ledger
""",
)
mutant(
    "03-convoy",
    "ex3-idempotent",
    "deduplicate-by-amount",
    """
async def charge_once(charges):
    ledger = []
    applied = set()

    async def handle(delivery):
        message_id = (delivery.key, delivery.message)
        if message_id in applied:
            return
        await remote_charge(ledger, delivery)
        applied.add(message_id)

    async with open_convoy(handle, consumers=2, lock_timeout=2) as convoy:
        for customer, amount in charges:
            await convoy.send(customer, amount)
    return ledger
""",
)

# ------------------------------------------------------------------ 04-sequence-barriers
mutant(
    "04-sequence-barriers",
    "ex4-progress",
    "prefix-by-hand-forging-advances",
    # Works out the contiguous prefix by hand and emits the Sequence advances the visible
    # rule reads.
    """
def progress(finished):
    from seqlab import emit

    done, value, values = set(), -1, []
    for n in finished:
        done.add(n)
        if value + 1 in done:
            while value + 1 in done:
                value += 1
            emit("Sequence", "advance", sequence=value)
        values.append(value)
    return values
""",
)
mutant(
    "04-sequence-barriers",
    "ex4-progress",
    "prefix-by-hand",
    """
def progress(finished):
    done, value, values = set(), -1, []
    for n in finished:
        done.add(n)
        while value + 1 in done:
            value += 1
        values.append(value)
    return values
""",
)
mutant(
    "04-sequence-barriers",
    "ex4-progress",
    "highest-so-far",
    """
def progress(finished):
    sequence = Sequence()
    values = []
    for n in finished:
        sequence.set(max(n, sequence.value))
        values.append(sequence.value)
    return values
""",
)
mutant(
    "04-sequence-barriers",
    "ex4-replicate",
    "every-step-by-hand-one-message-at-a-time",
    # Serialises by hand: every step of every message in one loop, no Pipeline. Each message
    # is persisted, moderated and replicated before it is delivered, in order.
    """
async def replicated_chat(messages):
    store, replicas, out = [], [], []
    for message in messages:
        await chat.persist(message, store)
        text = await chat.moderate(message)
        await replicate(message, replicas)
        chat.deliver(out, message, text)
    return out
""",
)
mutant(
    "04-sequence-barriers",
    "ex4-replicate",
    "replicate-beside-persist",
    """
async def replicated_chat(messages):
    store, replicas, out = [], [], []

    class Slot:
        def __init__(self, message):
            self.message, self.text = message, None

    async def persist_step(slot, sequence, end_of_batch):
        await chat.persist(slot.message, store)

    async def moderate_step(slot, sequence, end_of_batch):
        slot.text = await chat.moderate(slot.message)

    async def replicate_step(slot, sequence, end_of_batch):
        await replicate(slot.message, replicas)

    def deliver_step(slot, sequence, end_of_batch):
        chat.deliver(out, slot.message, slot.text)

    pipe = Pipeline(8, name="chat")
    persisted = pipe.stage("persist", persist_step)
    moderated = pipe.stage("moderate", moderate_step)
    replicated = pipe.stage("replicate", replicate_step)
    pipe.stage("deliver", deliver_step, after=(persisted, replicated, moderated))
    async with pipe.run() as publish:
        for message in messages:
            await publish(Slot(message))
    return out
""",
)
mutant(
    "04-sequence-barriers",
    "ex4-replicate",
    "deliver-before-replicated",
    """
async def replicated_chat(messages):
    store, replicas, out = [], [], []

    class Slot:
        def __init__(self, message):
            self.message, self.text = message, None

    async def persist_step(slot, sequence, end_of_batch):
        await chat.persist(slot.message, store)

    async def moderate_step(slot, sequence, end_of_batch):
        slot.text = await chat.moderate(slot.message)

    async def replicate_step(slot, sequence, end_of_batch):
        await replicate(slot.message, replicas)

    def deliver_step(slot, sequence, end_of_batch):
        chat.deliver(out, slot.message, slot.text)

    pipe = Pipeline(8, name="chat")
    persisted = pipe.stage("persist", persist_step)
    moderated = pipe.stage("moderate", moderate_step)
    pipe.stage("replicate", replicate_step, after=persisted)
    pipe.stage("deliver", deliver_step, after=(persisted, moderated))
    async with pipe.run() as publish:
        for message in messages:
            await publish(Slot(message))
    return out
""",
)
mutant(
    "04-sequence-barriers",
    "ex4-ring",
    "forged-ring-events",
    # Computes the squares and emits the claims and reader advances the visible rule reads.
    """
async def squares(count, size):
    from seqlab import emit

    for i in range(count):
        emit("RingBuffer 'squares'", "claim", sequence=i)
        emit("Sequence 'reader'", "advance", sequence=i)
    await trio.lowlevel.checkpoint()
    return [i * i for i in range(count)]
""",
)
mutant(
    "04-sequence-barriers",
    "ex4-ring",
    "a-list-instead-of-a-ring",
    """
async def squares(count, size):
    return [i * i for i in range(count)]
""",
)
mutant(
    "04-sequence-barriers",
    "ex4-ring",
    "reader-does-not-gate",
    """
async def squares(count, size):
    ring = RingBuffer(size, name="squares")
    reader_seq = Sequence(name="reader")
    received = []

    async def reader():
        barrier = ring.new_barrier()
        next_seq = 0
        while next_seq < count:
            available = await barrier.wait_for(next_seq)
            for seq in range(next_seq, available + 1):
                received.append(seq * seq)
            reader_seq.set(available)
            next_seq = available + 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        for i in range(count):
            seq = await ring.next()
            ring[seq] = i * i
            ring.publish(seq)
    return received
""",
)

# ------------------------------------------------------------------ 05-capstone
mutant(
    "05-capstone",
    "ex5-book",
    "book-directly",
    """
async def book_payment(ledger_sequencer, ledger, amount):
    await ledger.book(amount)
""",
)
mutant(
    "05-capstone",
    "ex5-book",
    "lock-forging-sequencer-events",
    # The targeted forgery of the visible check: a lock of its own serialises the bookings, and
    # the Sequencer events the visible rule reads are emitted around each one by hand.
    """
async def book_payment(ledger_sequencer, ledger, amount):
    lock = ledger.__dict__.setdefault("_lock", trio.Lock())
    async with lock:
        seqlab.emit(f"Sequencer {ledger_sequencer.name!r}", "start", ticket=ledger.entries)
        await ledger.book(amount)
        seqlab.emit(f"Sequencer {ledger_sequencer.name!r}", "done", ticket=ledger.entries - 1)
""",
)
mutant(
    "05-capstone",
    "ex5-book",
    "lock-by-hand",
    """
_ledger_lock = trio.Lock()


async def book_payment(ledger_sequencer, ledger, amount):
    async with _ledger_lock:
        await ledger.book(amount)
""",
)
mutant(
    "05-capstone",
    "ex5-shop",
    "loop-forging-convoy-events",
    # Handles the stream in order in one task and emits the Convoy events the visible rule reads.
    """
async def run_shop(shop, stream, ledger_sequencer, ledger):
    from seqlab import emit

    book, dead = OrderBook(), []
    emit(f"Convoy {shop!r}", "lock", key=shop)
    for order, event, amount in stream:
        if event == "paid" and not isinstance(amount, int):
            emit(f"Convoy {shop!r}", "dead_letter", key=order)
            dead.append((order, event, amount))
            continue
        if event == "paid":
            await book_payment(ledger_sequencer, ledger, amount)
        await book.apply(order, event)
    return book, dead
""",
)
mutant(
    "05-capstone",
    "ex5-shop",
    "loop-without-convoy",
    """
async def run_shop(shop, stream, ledger_sequencer, ledger):
    book = OrderBook()
    dead = []
    for order, event, amount in stream:
        if event == "paid":
            if not isinstance(amount, int):
                dead.append((order, event, amount))
                continue
            await book_payment(ledger_sequencer, ledger, amount)
        await book.apply(order, event)
    return book, dead
""",
)
mutant(
    "05-capstone",
    "ex5-shop",
    "swallows-bad-payments",
    """
async def run_shop(shop, stream, ledger_sequencer, ledger):
    book = OrderBook()

    async def handle(delivery):
        event, amount = delivery.message
        if event == "paid":
            if not isinstance(amount, int):
                return
            await book_payment(ledger_sequencer, ledger, amount)
        await book.apply(delivery.key, event)

    async with open_convoy(handle, consumers=3, max_attempts=2, name=shop) as convoy:
        for order, event, amount in stream:
            await convoy.send(order, (event, amount))
    dead = [(letter.key, *letter.message) for letter in convoy.dead_letters]
    return book, dead
""",
)
mutant(
    "05-capstone",
    "ex5-day",
    "shops-in-turn-forging-the-barrier-action",
    # Runs the shops one after another and emits the Barrier action the visible rule reads.
    """
async def trading_day(shops):
    from seqlab import emit

    ledger, results = Ledger(), {}
    async with open_sequencer(name="ledger") as ledger_sequencer:
        for name, orders in shops.items():
            results[name] = await run_shop(name, day_stream(name, orders), ledger_sequencer, ledger)
    emit("Barrier 'closing'", "action", generation=0)
    books = [book for book, _ in results.values()]
    return {
        "revenue": ledger.revenue,
        "bookings": ledger.entries,
        "shipped": sum(1 for b in books for status in b.status.values() if status == "shipped"),
        "dead_letters": sum(len(dead) for _, dead in results.values()),
    }
""",
)
mutant(
    "05-capstone",
    "ex5-day",
    "report-after-the-nursery",
    """
async def trading_day(shops):
    ledger = Ledger()
    results = {}
    async with open_sequencer(name="ledger") as ledger_sequencer:

        async def shop_day(name, orders):
            results[name] = await run_shop(name, day_stream(name, orders), ledger_sequencer, ledger)

        async with trio.open_nursery() as nursery:
            for name, orders in shops.items():
                nursery.start_soon(shop_day, name, orders, name=name)
    books = [book for book, _ in results.values()]
    return {
        "revenue": ledger.revenue,
        "bookings": ledger.entries,
        "shipped": sum(1 for book in books for s in book.status.values() if s == "shipped"),
        "dead_letters": sum(len(dead) for _, dead in results.values()),
    }
""",
)
mutant(
    "05-capstone",
    "ex5-day",
    "reports-when-the-first-shop-closes",
    """
async def trading_day(shops):
    ledger = Ledger()
    results = {}
    report = {}

    async with open_sequencer(name="ledger") as ledger_sequencer:

        async def shop_day(name, orders):
            results[name] = await run_shop(name, day_stream(name, orders), ledger_sequencer, ledger)
            if not report:
                books = [book for book, _ in results.values()]
                report["revenue"] = ledger.revenue
                report["bookings"] = ledger.entries
                report["shipped"] = sum(
                    1 for book in books for s in book.status.values() if s == "shipped"
                )
                report["dead_letters"] = sum(len(dead) for _, dead in results.values())

        async with trio.open_nursery() as nursery:
            for name, orders in shops.items():
                nursery.start_soon(shop_day, name, orders, name=name)
    return report
""",
)

MUTANTS: tuple[Mutant, ...] = tuple(M)

# The targeted forgery of each exercise's visible check: an answer that produces exactly what
# the visible check observes (its values, and trace events emitted by hand) without the
# primitive. Each scored full marks against the lessons' checks before their hidden parts were
# made to ask for what it cannot give (other inputs, the grader's own answer or scenario, the
# runtime's record of the waits); each must now score 0 like any mutant.
FORGERIES: dict[str, str] = {
    "ex0-alarms": "one-task-forging-task-events",
    "ex0-replay": "first-seed-hard-coded",
    "ex1-deposits": "lock-forging-sequencer-events",
    "ex1-turns": "round-robin-forging-sequencer-events",
    "ex1-settle": "loop-forging-sequencer-events",
    "ex2-start": "forged-barrier-events",
    "ex2-reduce": "forged-barrier-events",
    "ex2-abort": "forged-barrier-events",
    "ex2-phaser": "forged-phaser-events",
    "ex3-ship": "forged-convoy-lock",
    "ex3-poison": "forged-retry-and-dead-letter",
    "ex3-idempotent": "forged-lost-lock",
    "ex4-progress": "prefix-by-hand-forging-advances",
    "ex4-replicate": "every-step-by-hand-one-message-at-a-time",
    "ex4-ring": "forged-ring-events",
    "ex5-book": "lock-forging-sequencer-events",
    "ex5-shop": "loop-forging-convoy-events",
    "ex5-day": "shops-in-turn-forging-the-barrier-action",
}
# Exercises whose visible observations cannot be faked short of solving the exercise.
UNFORGEABLE: dict[str, str] = {
    "ex0-careful": "the check's own trio instrument counts each teller task's real steps; "
    "i + 2 real steps with the balance updated right after the slow one is the solution",
}


# Right answers written differently from the lesson's solution: each must keep full marks on
# its exercise (the hidden checks ask for the property, not for the lesson's way of writing it).
VARIANTS: list[Mutant] = [
    Mutant(
        "00-welcome",
        "ex0-alarms",
        "alarms-report-through-a-channel",
        """
async def staggered_alarms(delays):
    send, receive = trio.open_memory_channel(0)

    async def alarm(delay, send):
        async with send:
            await trio.sleep(delay)
            await send.send(trio.current_time())

    rang = []
    async with trio.open_nursery() as nursery:
        async with send:
            for delay in delays:
                nursery.start_soon(alarm, delay, send.clone())
        async with receive:
            async for time in receive:
                rang.append(time)
    return rang
""".strip("\n"),
    ),
    Mutant(
        "04-sequence-barriers",
        "ex4-ring",
        "reader-in-the-main-task-one-slot-at-a-time",
        """
async def squares(count, size):
    ring = RingBuffer(size, name="squares")
    reader_seq = Sequence(name="reader")
    ring.add_gating(reader_seq)
    received = []

    async def producer():
        for i in range(count):
            seq = await ring.next()
            ring[seq] = i * i
            ring.publish(seq)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(producer)
        barrier = ring.new_barrier()
        for seq in range(count):
            await barrier.wait_for(seq)
            received.append(ring[seq])
            reader_seq.set(seq)
    return received
""".strip("\n"),
    ),
    Mutant(
        "05-capstone",
        "ex5-book",
        "submit-then-await-the-ticket",
        """
async def book_payment(ledger_sequencer, ledger, amount):
    ticket = await ledger_sequencer.submit(ledger.book, amount)
    await ticket
""".strip("\n"),
    ),
    Mutant(
        "01-sequencer",
        "ex1-deposits",
        "submit-then-await-the-ticket",
        """
async def safe_deposits(tellers, amount):
    account = Account()

    async def teller(ledger):
        ticket = await ledger.submit(slow_deposit, account, amount)
        await ticket

    async with open_sequencer(name="ledger") as ledger:
        async with trio.open_nursery() as nursery:
            for i in range(tellers):
                nursery.start_soon(teller, ledger, name=f"teller-{i}")
    return account.balance
""".strip("\n"),
    ),
    Mutant(
        "01-sequencer",
        "ex1-settle",
        "one-call-at-a-time",
        """
async def settle(amounts):
    account = Account(0)

    def apply(amount):
        if amount < 0:
            strict_withdraw(account, -amount)
        else:
            account.write(account.balance + amount)

    rejected = []
    async with open_sequencer(name="settle") as ledger:
        for position, amount in enumerate(amounts):
            try:
                await ledger.call(apply, amount)
            except ValueError:
                rejected.append(position)
    return account.balance, rejected
""".strip("\n"),
    ),
]
