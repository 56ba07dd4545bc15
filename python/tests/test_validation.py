"""The plugin's record methods accept exactly what Chancy 0.26's ``_record``
accepts: one table of keys, units and values, run against Chancy's own plugin
(read back from its in-memory ``_buckets``) and ours (read back from its
aggregator), asserting the same accept/drop decision and the same stored value
and unit for every row, through the three record methods and the hub-event
path (``_record``). Drops are warned and never raise."""

import decimal
import fractions
import logging
import math

import pytest
from chancy.plugins.metrics import Metrics as ChancyMetrics

from ringmetrics import ManualClock
from ringmetrics.chancy import Metrics

pytestmark = pytest.mark.timeout(60)

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
DROP = "drop"
DEFAULT = object()  # the unit argument left out


class StrSub(str):
    pass


class FloatSub(float):
    pass


class FloatOwnFloat(float):
    """Chancy checks the raw value's finiteness, then stores float(value)."""

    def __float__(self):
        return 2.5


class IntSub(int):
    pass


class IntOwnFloat(int):
    """An int subclass is read through its __float__ by both of Chancy's steps."""

    def __float__(self):
        return 7.25


class IntInfiniteFloat(int):
    def __float__(self):
        return math.inf


class HasFloat:
    def __float__(self):
        return 1.5


class HasIndex:
    def __index__(self):
        return 3


class NumpyLikeScalar:
    """What numpy.int64 looks like to isinstance: no int or float base."""

    def __float__(self):
        return 4.0

    def __int__(self):
        return 4

    def __index__(self):
        return 4

    def __array__(self, dtype=None, copy=None):
        raise AssertionError("never converted")


class NumpyLikeFloat(float):
    """What numpy.float64 is: a float subclass."""

    def __array__(self, dtype=None, copy=None):
        raise AssertionError("never converted")


class Falsy:
    """A unit that is false: `unit or default` picks the default."""

    def __bool__(self):
        return False


# (row id, key, value, unit, expected): expected is DROP or (stored value,
# stored unit), where a stored unit of None means the kind's default.
ROWS = [
    # keys
    ("key-plain", "k", 1, "count", (1.0, "count")),
    ("key-empty", "", 1, "count", DROP),
    ("key-1024-bytes", "k" * 1024, 1, "count", (1.0, "count")),
    ("key-1025-bytes", "k" * 1025, 1, "count", DROP),
    ("key-1024-bytes-multibyte", "\u00e9" * 512, 1, "count", (1.0, "count")),
    ("key-1026-bytes-multibyte", "\u00e9" * 513, 1, "count", DROP),
    ("key-nul", "a\x00b", 1, "count", DROP),
    ("key-surrogate", "\ud800", 1, "count", DROP),
    ("key-none", None, 1, "count", DROP),
    ("key-bytes", b"k", 1, "count", DROP),
    ("key-int", 5, 1, "count", DROP),
    ("key-str-subclass", StrSub("k"), 1, "count", (1.0, "count")),
    # units
    ("unit-left-out", "k", 1, DEFAULT, (1.0, None)),
    ("unit-none", "k", 1, None, (1.0, None)),
    ("unit-empty", "k", 1, "", (1.0, None)),
    ("unit-zero", "k", 1, 0, (1.0, None)),
    ("unit-false", "k", 1, False, (1.0, None)),
    ("unit-empty-list", "k", 1, [], (1.0, None)),
    ("unit-falsy-object", "k", 1, Falsy(), (1.0, None)),
    ("unit-64-chars", "k", 1, "u" * 64, (1.0, "u" * 64)),
    ("unit-64-multibyte-chars", "k", 1, "\u00b5" * 64, (1.0, "\u00b5" * 64)),
    ("unit-65-chars", "k", 1, "u" * 65, DROP),
    ("unit-nul", "k", 1, "s\x00", DROP),
    ("unit-surrogate", "k", 1, "\udc80", DROP),
    ("unit-int", "k", 1, 5, DROP),
    ("unit-bytes", "k", 1, b"s", DROP),
    ("unit-true", "k", 1, True, DROP),
    ("unit-str-subclass", "k", 1, StrSub("seconds"), (1.0, "seconds")),
    # values
    ("value-bool-true", "k", True, "count", DROP),
    ("value-bool-false", "k", False, "count", DROP),
    ("value-int", "k", 3, "count", (3.0, "count")),
    ("value-negative-int", "k", -3, "count", (-3.0, "count")),
    ("value-int-beyond-i64", "k", 2**64 + 1, "count", (float(2**64), "count")),
    ("value-int-near-float-max", "k", 2**1023, "count", (float(2**1023), "count")),
    ("value-huge-int", "k", 10**400, "count", DROP),
    ("value-int-rounding-to-overflow", "k", 2**1024 - 1, "count", DROP),
    ("value-float", "k", 0.25, "count", (0.25, "count")),
    ("value-float-subclass", "k", FloatSub(1.5), "count", (1.5, "count")),
    ("value-float-subclass-own-float", "k", FloatOwnFloat(1.5), "count", (2.5, "count")),
    ("value-float-subclass-nan", "k", FloatSub(math.nan), "count", DROP),
    ("value-numpy-like-float", "k", NumpyLikeFloat(0.5), "count", (0.5, "count")),
    ("value-int-subclass", "k", IntSub(4), "count", (4.0, "count")),
    ("value-int-subclass-own-float", "k", IntOwnFloat(4), "count", (7.25, "count")),
    ("value-int-subclass-infinite-float", "k", IntInfiniteFloat(4), "count", DROP),
    ("value-nan", "k", math.nan, "count", DROP),
    ("value-inf", "k", math.inf, "count", DROP),
    ("value-minus-inf", "k", -math.inf, "count", DROP),
    ("value-decimal", "k", decimal.Decimal("1.5"), "count", DROP),
    ("value-fraction", "k", fractions.Fraction(1, 2), "count", DROP),
    ("value-has-float", "k", HasFloat(), "count", DROP),
    ("value-has-index", "k", HasIndex(), "count", DROP),
    ("value-numpy-like-scalar", "k", NumpyLikeScalar(), "count", DROP),
    ("value-str", "k", "1", "count", DROP),
    ("value-none", "k", None, "count", DROP),
    ("value-complex", "k", 1j, "count", DROP),
]

KINDS = {
    "increment_counter": ("counter", "count"),
    "record_gauge": ("gauge", "number"),
    "record_histogram_value": ("histogram", "number"),
}


RECORD_DROPS = ("invalid_key", "invalid_unit", "non_finite_value", "conflict", "capacity_exhausted")


def dropped_records(plugin):
    drops = plugin.drops()
    return sum(drops[k] for k in RECORD_DROPS)


def expected(row_expected, default_unit):
    if row_expected == DROP:
        return DROP
    value, unit = row_expected
    return value, default_unit if unit is None else unit


async def chancy_outcome(path, method, key, value, unit):
    plugin = ChancyMetrics()
    kind, _ = KINDS[method]
    if path == "_record":
        plugin._record(key, value, kind, None if unit is DEFAULT else unit)
    elif unit is DEFAULT:
        await getattr(plugin, method)(key, value)
    else:
        await getattr(plugin, method)(key, value, unit=unit)
    minute = [b for k, b in plugin._buckets.items() if k[1] == 60]
    if not minute:
        return DROP
    assert len(minute) == 1
    assert minute[0].type == kind
    return minute[0].value, minute[0].unit


async def our_outcome(path, method, key, value, unit):
    plugin = Metrics(clock=ManualClock(T0))
    kind, _ = KINDS[method]
    before = dropped_records(plugin)
    if path == "_record":
        assert plugin._record(key, value, kind, None if unit is DEFAULT else unit) is None
    elif unit is DEFAULT:
        assert await getattr(plugin, method)(key, value) is None
    else:
        assert await getattr(plugin, method)(key, value, unit=unit) is None
    aggregator = plugin.aggregators()[0]
    series = aggregator.series()
    if not series:
        assert dropped_records(plugin) == before + 1, "a drop is counted"
        return DROP
    ((stored_key, stored_kind, stored_unit),) = series
    assert stored_key == key and stored_kind == kind
    ((start, count, total, _min, _max, last, _sampled_at),) = aggregator.snapshot(str(key), "1min")
    assert start == T0 and count == 1 and total == last
    return last, stored_unit


@pytest.mark.parametrize("path", ["method", "_record"])
@pytest.mark.parametrize("method", list(KINDS))
@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
async def test_same_decision_and_stored_value_as_chancy(row, method, path, caplog):
    caplog.set_level(logging.WARNING)
    _, key, value, unit, row_expected = row
    want = expected(row_expected, KINDS[method][1])
    theirs = await chancy_outcome(path, method, key, value, unit)
    assert theirs == want, "the table states Chancy 0.26's own behaviour"
    caplog.clear()
    ours = await our_outcome(path, method, key, value, unit)
    assert ours == theirs
    dropped = [r for r in caplog.records if "Dropped" in r.getMessage()]
    assert len(dropped) == (1 if want == DROP else 0), "each drop is warned, once"


async def test_drops_are_warned_at_most_once_a_minute_and_never_raise(caplog):
    caplog.set_level(logging.WARNING)
    plugin = Metrics(clock=ManualClock(T0))
    for _, key, value, unit, row_expected in ROWS:
        if row_expected == DROP:
            for method in KINDS:
                if unit is DEFAULT:
                    assert await getattr(plugin, method)(key, value) is None
                else:
                    assert await getattr(plugin, method)(key, value, unit=unit) is None
    dropped = [r for r in caplog.records if "Dropped" in r.getMessage()]
    assert len(dropped) == 1
    drops = plugin.drops()
    n = 3 * sum(1 for r in ROWS if r[4] == DROP)
    assert drops["invalid_key"] + drops["invalid_unit"] + drops["non_finite_value"] == n


async def test_a_falsy_unit_is_the_default_for_a_later_record_too():
    # `unit or default`: "" then None then 0 are the same series as the default.
    plugin = Metrics(clock=ManualClock(T0))
    await plugin.increment_counter("c", 1, unit="")
    await plugin.increment_counter("c", 2, unit=None)
    await plugin.increment_counter("c", 3, unit=0)
    await plugin.increment_counter("c", 4)
    await plugin.record_gauge("g", 1, unit="")
    assert plugin.aggregators()[0].series() == [("c", "counter", "count"), ("g", "gauge", "number")]
    assert plugin.drops()["conflict"] == 0
    ((_, count, total, *_),) = plugin.aggregators()[0].snapshot("c", "1min")
    assert (count, total) == (4, 10.0)
