"""The pictures of the example notebooks, kept out of their cells so that the cells read
as a lesson about rxconn rather than about matplotlib.

The notebooks import it from their own directory (Jupyter runs a notebook's
kernel there): ``from plots import draw_marbles, ...``. Two kinds of picture:

* :func:`draw_state_timeline` (notebook 02): a connection's states over wall-clock
  time as coloured bands, with the messages sent and the echoes received as ticks;
* :func:`draw_quality` (notebook 02): ``Connection.quality`` over time against the
  delay a relay added;
* :func:`draw_marbles` (notebook 03): marble diagrams of a test run in virtual
  time, one row per stream; :func:`link_rows`, :func:`writes_row` and
  :func:`recorded_row` turn a ``FakeTransport`` and ``TestScheduler`` observers
  into those rows, :func:`state_marble` names a state in one short marble;
* :func:`draw_arrivals` (notebook 04): when each numbered message arrived, in both
  directions, against when it was sent, with the instant a hub was killed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeAlias

import matplotlib.pyplot as plt
from matplotlib.patches import Patch

import rxconn
from rxconn.testing import FakeTransport


__all__ = [
    "Event",
    "Row",
    "draw_arrivals",
    "draw_marbles",
    "draw_quality",
    "draw_state_timeline",
    "link_rows",
    "recorded_row",
    "state_marble",
    "writes_row",
]

Event: TypeAlias = tuple[float, str, str | None]
"""A marble: (time, text, colour key: a transport name, ``"error"`` or ``None``)."""

Row: TypeAlias = tuple[str, float, float | None, list[Event]]
"""One line of a marble diagram: (label, start, end or ``None`` if still open, marbles)."""

Marble: TypeAlias = tuple[str, str | None]
"""What a recorded value is drawn as: (text, colour key)."""

# ---------------------------------------------------------------- notebook 02

StateKey: TypeAlias = tuple[str, str | None]

STATE_COLORS: Final[Mapping[StateKey, str]] = {
    ("connecting", "websocket"): "#9ecae1",
    ("connected", "websocket"): "#2171b5",
    ("connecting", "http"): "#fdd0a2",
    ("connected", "http"): "#e6550d",
    ("errored", None): "#cb181d",
    ("disconnected", None): "#d9d9d9",
}
STATE_LABELS: Final[Mapping[StateKey, str]] = {
    ("connecting", "websocket"): "connecting (WebSocket)",
    ("connected", "websocket"): "connected (WebSocket)",
    ("connecting", "http"): "connecting (HTTP)",
    ("connected", "http"): "connected (HTTP)",
    ("errored", None): "errored",
    ("disconnected", None): "disconnected",
}
TICKS: Final[dict[str, Any]] = {"linelengths": 0.5, "linewidths": 0.8}


def _state_key(state: rxconn.State) -> StateKey:
    return (state.kind, getattr(state, "transport", None))


def draw_state_timeline(
    timeline: Sequence[tuple[float, rxconn.State]],
    sent: Sequence[tuple[float, str | bytes]],
    received: Sequence[tuple[float, str | bytes, str | None]],
    marks: Mapping[str, float],
    end: float,
) -> None:
    """Draw one band per state (coloured by transport), the sends and the echoes.

    Args:
        timeline: (time, state) for every state change, in order.
        sent: (time, payload) for every ``send()``.
        received: (time, payload, transport it arrived over) for every message.
        marks: Labelled instants to draw as dashed lines ("WebSocket blocked").
        end: Where the time axis ends (seconds).
    """
    fig, ax = plt.subplots(figsize=(10, 3.2))
    ends = [t for t, _ in timeline[1:]] + [end]
    for (start, state), until in zip(timeline, ends, strict=True):
        width = max(until - start, 0.004)  # keep instants visible
        ax.broken_barh([(start, width)], (1.6, 0.8), color=STATE_COLORS[_state_key(state)])
    ax.eventplot([t for t, _ in sent], lineoffsets=1, colors="#636363", **TICKS)
    for transport in ("websocket", "http"):
        times = [t for t, _, over in received if over == transport]
        color = STATE_COLORS[("connected", transport)]
        ax.eventplot(times, lineoffsets=0, colors=color, **TICKS)
    for label, t in marks.items():
        ax.axvline(t, color="black", linestyle="--", linewidth=1)
        ax.annotate(label, (t, 2.5), (3, 0), textcoords="offset points", fontsize=9)
    ax.set_yticks([0, 1, 2], ["echoes received", "messages sent", "state"])
    ax.set_ylim(-0.5, 2.9)
    ax.set_xlim(0, end)
    ax.set_xlabel("seconds")
    ax.set_title(
        f"Fallback and upgrade: {len(received)} of {len(sent)} messages echoed, in order",
        fontsize=11,
    )
    seen = list(dict.fromkeys(_state_key(state) for _, state in timeline))
    ax.legend(
        handles=[Patch(color=STATE_COLORS[k], label=STATE_LABELS[k]) for k in seen],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.25),
        ncol=len(seen),
        fontsize=8,
        frameon=False,
    )
    ax.spines[["top", "right", "left"]].set_visible(False)
    fig.tight_layout()
    plt.show()


# ---------------------------------------------------------------- notebook 03

MARBLE_COLORS: Final[Mapping[str | None, str]] = {
    "websocket": "#9ecae1",
    "http": "#fdae6b",
    "error": "#fb6a4a",
    None: "white",
}
MARBLE_TEXT: Final[dict[str, Any]] = {
    "ha": "center",
    "va": "center",
    "size": 9,
    "family": "monospace",
}


def draw_quality(
    samples: Sequence[tuple[float, rxconn.LinkQuality]], delays: Sequence[tuple[float, float]]
) -> None:
    """Round trips (each, and the smoothed average) over time, and the round trip the
    relay's delay alone makes (twice the delay: once each way) as a step line."""
    fig, ax = plt.subplots(figsize=(9, 3))
    times = [t for t, _ in samples]
    ax.plot(times, [q.rtt * 1000 for _, q in samples], ".", label="rtt")
    ax.plot(times, [q.rtt_avg * 1000 for _, q in samples], "-", label="rtt_avg")
    steps = [*delays, (times[-1] if times else 0.0, delays[-1][1] if delays else 0.0)]
    ax.step(
        [t for t, _ in steps],
        [2000 * d for _, d in steps],
        where="post",
        linestyle="--",
        color="grey",
        label="2 x added delay",
    )
    ax.set_xlabel("seconds")
    ax.set_ylabel("milliseconds")
    ax.legend(loc="upper left")
    fig.tight_layout()
    plt.show()


def link_rows(transport: FakeTransport) -> list[Row]:
    """One row per link of ``transport``: its script, as the connection saw it.

    Each row starts where the connection subscribed to the link and stops where
    it disposed of it; script characters after the disposal are not drawn.
    """
    rows: list[Row] = []
    for index, sub in enumerate(transport.subscriptions):
        script = transport.scripts[min(index, len(transport.scripts) - 1)]
        events: list[Event] = []
        for offset, char in enumerate(script):
            t = sub.subscribe + offset * transport.timespan
            if sub.unsubscribe is not None and t > sub.unsubscribe:
                break
            if char == "#":
                events.append((t, "#", "error"))
            elif char == "|":
                events.append((t, "|", None))
            elif char == "o":
                events.append((t, "o", transport.name))
            elif char != "-":
                events.append((t, char, None))
        probe = " (probe)" if transport.contexts[index].probe else ""
        label = f"{transport.name} #{index}{probe}\n'{script}'"
        rows.append((label, sub.subscribe, sub.unsubscribe, events))
    return rows


def state_marble(state: rxconn.State) -> Marble:
    """``d``, ``c<attempt>``, ``o``, ``e<attempt>``: a state as one marble, coloured by
    its transport (red when errored)."""
    if isinstance(state, rxconn.Connecting):
        return f"c{state.attempt}", state.transport
    if isinstance(state, rxconn.Connected):
        return "o", state.transport
    if isinstance(state, rxconn.Errored):
        return f"e{state.attempt}", "error"
    return "d", None


def writes_row(transport: FakeTransport) -> Row:
    """When each payload was written to a link of ``transport``."""
    events: list[Event] = [(w.time, str(w.payload), None) for w in transport.writes]
    return (f"written to\n{transport.name} links", 0, None, events)


def _as_text(value: Any) -> Marble:
    return str(value), None


def recorded_row(label: str, observer: Any, marble: Callable[[Any], Marble] = _as_text) -> Row:
    """A row from a ``TestScheduler`` observer's recorded notifications.

    Args:
        label: The row's name.
        observer: What ``scheduler.create_observer()`` returned, after the run.
        marble: How to draw a value (default: its ``str``, uncoloured).
    """
    events: list[Event] = []
    completed: float | None = None
    for message in observer.messages:
        notification = message.value
        if notification.kind == "N":
            events.append((message.time, *marble(notification.value)))
        elif notification.kind == "C":
            events.append((message.time, "|", None))
            completed = message.time
        else:
            events.append((message.time, "#", "error"))
            completed = message.time
    return (label, 0, completed, events)


def _marble_text(texts: list[str]) -> str:
    """Values at one instant, grouped as ``(a,b)``; a completion at that instant as ``(a|)``."""
    *values, last = texts
    if len(texts) == 1:
        return last
    if last == "|":
        return f"({','.join(values)}|)"
    return f"({','.join(texts)})"


def draw_marbles(title: str, rows: Sequence[Row], until: float) -> None:
    """Draw ``rows`` as a marble diagram from 0 to ``until`` (virtual seconds).

    A row still open at the end gets an arrow; a closed one is cut with a bar.
    Values at the same instant are grouped, as in ``(a,b)``.
    """
    fig, ax = plt.subplots(figsize=(10, 0.62 * len(rows) + 1.0))
    for y, (_, start, stop, events) in enumerate(reversed(rows)):
        if stop is None:  # still subscribed at the end: an arrow
            arrow = {"arrowstyle": "-|>", "lw": 1.2}
            ax.annotate("", (until + 0.6, y), (start, y), arrowprops=arrow)
            ax.plot([start], [y], "|", color="black", ms=8)
        else:  # from subscription to disposal
            ax.plot([start, stop], [y, y], "-|", color="black", lw=1.2, ms=8)
        groups: dict[float, list[tuple[str, str | None]]] = {}
        for t, text, color in events:
            groups.setdefault(t, []).append((text, color))
        for t, group in groups.items():
            texts = [text for text, _ in group]
            if texts == ["|"]:
                ax.plot([t], [y], marker="|", color="black", ms=18, mew=2.5)
                continue
            box = {"boxstyle": "round,pad=0.3", "fc": MARBLE_COLORS[group[-1][1]], "lw": 0.8}
            ax.text(t, y, _marble_text(texts), bbox=box, **MARBLE_TEXT)
    ax.set_yticks(range(len(rows)), [row[0] for row in reversed(rows)], fontsize=9)
    ax.set_xticks(range(0, int(until) + 1))
    ax.set_xlim(-0.7, until + 0.9)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel("virtual time (s)")
    ax.set_title(title, fontsize=11)
    ax.grid(axis="x", color="#f0f0f0")
    ax.set_axisbelow(True)
    ax.spines[["top", "right", "left"]].set_visible(False)
    ax.tick_params(axis="y", length=0)
    kinds = ("websocket", "http", "error")
    ax.legend(
        handles=[Patch(fc=MARBLE_COLORS[k], ec="black", lw=0.8, label=k) for k in kinds],
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        fontsize=8,
        frameon=False,
    )
    fig.tight_layout()
    plt.show()


# ---------------------------------------------------------------- notebook 04


def draw_arrivals(
    sent: Sequence[tuple[float, int]],
    echoes: Sequence[tuple[float, int]],
    pushes: Sequence[tuple[float, int]],
    marks: Mapping[str, float],
    end: float,
) -> None:
    """Each message number against the time it was sent and the times it arrived, with
    the time around the marks enlarged in an inset.

    Args:
        sent: (time, number) for every number sent (both ways at once).
        echoes: (time, number) for every echo of a client message that came back.
        pushes: (time, number) for every message a hub sent that the client received.
        marks: Labelled instants to draw as vertical lines, in order (the first one in
            red: the fault).
        end: Where the time axis ends (seconds).
    """
    fig, ax = plt.subplots(figsize=(10, 3.8))
    zoom = ax.inset_axes((0.6, 0.06, 0.3, 0.42))
    for axes in (ax, zoom):
        _draw_series(axes, sent, echoes, pushes)
        for index, t in enumerate(marks.values()):
            axes.axvline(t, color="#cb181d" if index == 0 else "black", ls="--", lw=1)
    top = max([n for _, n in sent], default=1)
    for index, (label, t) in enumerate(marks.items()):
        height = top * (0.95 - 0.1 * index)
        ax.annotate(label, (t, height), (4, 0), textcoords="offset points", fontsize=9)
    if marks:
        t0, t1 = min(marks.values()) - 0.12, max(marks.values()) + 0.2
        numbers = [n for t, n in [*sent, *echoes, *pushes] if t0 <= t <= t1]
        zoom.set_xlim(t0, t1)
        zoom.set_ylim(min(numbers, default=0) - 1, max(numbers, default=1) + 1)
        zoom.tick_params(labelsize=7)
        ax.indicate_inset_zoom(zoom, edgecolor="grey")
    else:
        zoom.set_visible(False)
    ax.set_xlim(0, end)
    ax.set_xlabel("seconds")
    ax.set_ylabel("message number")
    ax.set_title(
        f"{len(echoes)} echoes and {len(pushes)} hub messages of {len(sent)} each way",
        fontsize=11,
    )
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    plt.show()


def _draw_series(
    ax: Any,
    sent: Sequence[tuple[float, int]],
    echoes: Sequence[tuple[float, int]],
    pushes: Sequence[tuple[float, int]],
) -> None:
    """The sends as a grey line, the echoes as rings, the hub's messages as dots."""
    ax.plot([t for t, _ in sent], [n for _, n in sent], "-", color="#bdbdbd", lw=3, label="sent")
    ax.plot(
        [t for t, _ in echoes],
        [n for _, n in echoes],
        "o",
        ms=4,
        mfc="none",
        color=STATE_COLORS[("connected", "websocket")],
        label="client -> hub, echoed back",
    )
    ax.plot(
        [t for t, _ in pushes],
        [n for _, n in pushes],
        ".",
        ms=3,
        color=STATE_COLORS[("connected", "http")],
        label="hub.send() -> client",
    )
