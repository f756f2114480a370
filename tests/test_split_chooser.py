"""SplitChooser (kernels/worksplit.py) on a fake clock: it settles on the faster variant, and
re-tries the slower one only as often as keeps the re-tries' extra time under PROBE_SHARE."""
from whisperlite.kernels.worksplit import SplitChooser


class FakeWork:
    """A clock, and the two variants as functions that advance it by their current cost."""

    def __init__(self, serial: float, split: float) -> None:
        self.now = 0.0
        self.cost = [serial, split]
        self.used = [0, 0]

    def clock(self) -> float:
        return self.now

    def variant(self, which: int):
        def run() -> int:
            self.now += self.cost[which]
            self.used[which] += 1
            return which
        return run


def drive(work: FakeWork, chooser: SplitChooser, calls: int) -> float:
    start = work.now
    for _ in range(calls):
        chooser.run(work.variant(0), work.variant(1), ())
    return work.now - start


def test_a_much_slower_split_costs_at_most_the_probe_share():
    """The other core busy: the split takes 4x a serial step. 1000 steps take no more than
    1000 serial steps plus PROBE_SHARE (and the two first calls of each variant)."""
    work = FakeWork(serial=1.0, split=4.0)
    chooser = SplitChooser(clock=work.clock)
    spent = drive(work, chooser, 1000)
    first = 2 * (4.0 - 1.0)
    assert spent <= 1000 * (1 + SplitChooser.PROBE_SHARE) + first
    assert work.used[1] < 20


def test_a_faster_split_is_chosen_and_a_change_is_followed():
    work = FakeWork(serial=1.0, split=0.6)
    chooser = SplitChooser(clock=work.clock)
    drive(work, chooser, 200)
    assert work.used[1] > 190
    work.cost[1], work.used = 3.0, [0, 0]  # another process takes the second core
    drive(work, chooser, 200)
    assert work.used[0] > 190
    work.cost[1], work.used = 0.6, [0, 0]  # and leaves it
    drive(work, chooser, 400)
    assert work.used[1] > 300


def test_variants_about_as_fast_are_both_kept_measured():
    work = FakeWork(serial=1.0, split=1.01)
    chooser = SplitChooser(clock=work.clock)
    drive(work, chooser, 100)
    assert min(work.used) > 10
