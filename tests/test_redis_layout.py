"""The Redis key layout a cluster needs, checked on a single node too: every Lua script
reaches only the keys it is given (KEYS[n]), and the keys of one call share a slot."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection

import mall
from mall import redis as mall_redis
from mall.redis import CrossSlotKeys, auto_pipeline, check_one_slot, get_redis, script

LUA_FILES = sorted(Path(mall.__file__).parent.glob("**/lua/*.lua"))
STOCK_LIBRARY = Path(mall.__file__).parent / "kit" / "stock" / "lua" / "library.lua"
STOCK_HELPERS = re.findall(r"^local function (\w+)\(", STOCK_LIBRARY.read_text(), re.M)
# commands whose every argument is a key; for the others only the first one is
ALL_KEYS = {"DEL", "EXISTS", "UNLINK", "TOUCH", "MGET", "WATCH", "SINTER", "SUNION", "SDIFF"}
CALL = re.compile(r"redis\.p?call\(\s*'([A-Za-z]+)'\s*(?:,\s*([^)]*))?\)")


def _arguments(text: str) -> list[str]:
    """Top-level comma-separated arguments (no nested calls in key positions)."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    parts.append(current.strip())
    return parts


@pytest.mark.nodb
def test_there_are_scripts_to_check() -> None:
    # the hot-stock kit's shared scripts replaced each domain's own warm, give-back,
    # adjust and snapshot scripts (24 files before, 19 with the kit's)
    assert len(LUA_FILES) >= 15, LUA_FILES


@pytest.mark.nodb
@pytest.mark.parametrize("path", LUA_FILES, ids=lambda p: f"{p.parent.parent.name}/{p.stem}")
def test_every_script_reaches_only_its_declared_keys(path: Path) -> None:
    """Redis 7 in cluster mode refuses a key a script builds itself (6.2 lets it pass).
    A stock script is checked as it runs: with the kit's helpers (mall.kit.stock) first,
    which take keys as KEYS indices."""
    text = path.read_text()
    if path != STOCK_LIBRARY and re.search(rf"\b({'|'.join(STOCK_HELPERS)})\(", text):
        text = STOCK_LIBRARY.read_text() + "\n" + text
    source = "\n".join(line.split("--", 1)[0] for line in text.splitlines())
    calls = CALL.findall(source)
    assert calls, f"{path} calls no redis command"
    assert len(calls) == len(re.findall(r"redis\.p?call\(", source)), "a command name not literal"
    for command, rest in calls:
        args = _arguments(rest) if rest else []
        keys = args if command.upper() in ALL_KEYS else args[:1]
        for arg in keys:
            assert re.fullmatch(r"KEYS\[\w+\]", arg), f"{path}: {command} {arg!r} is not a KEYS[n]"


@pytest.mark.nodb
def test_keys_of_one_call_must_share_a_slot() -> None:
    check_one_slot(["{sk:1}:stock", "{sk:1}:buyers", "{sk:1}:wins"])
    check_one_slot(["only-one"])
    with pytest.raises(CrossSlotKeys):
        check_one_slot(["{sk:1}:stock", "{sk:2}:stock"])
    with pytest.raises(CrossSlotKeys):
        check_one_slot(["sk:1:stock", "sk:1:buyers"])  # no hash tag: two slots
    with pytest.raises(CrossSlotKeys):
        check_one_slot(["{}x}:a", "{}x}:b"])  # `{}` is no tag: the whole keys are hashed
    check_one_slot(["{sk:1}:stock", "x{sk:1}:buyers", b"{sk:1}:wins"])  # one tag, any form


async def test_a_script_call_across_slots_is_refused_before_redis() -> None:
    take = script("mall.touch", "take")
    with pytest.raises(CrossSlotKeys):
        await take(keys=["touch:{m:1}:202501", "touch:{m:2}:202501"], args=[3, 60, "0"])
    assert await get_redis().exists("touch:{m:1}:202501") == 0
    assert int(await take(keys=["touch:{m:1}:202501"], args=[3, 60, "0"])) == 1


async def test_auto_pipeline_fails_only_the_call_with_cross_slot_keys() -> None:
    take = script("mall.touch", "take")
    pipeline = auto_pipeline()
    good = [pipeline.run(take, [f"touch:{{m:{m}}}:202501"], [3, 60, "0"]) for m in range(30)]
    bad = pipeline.run(take, ["touch:{m:1}:x", "touch:{m:2}:x"], [3, 60, "0"])
    results = await asyncio.gather(*good, bad, return_exceptions=True)
    assert [int(r) for r in results[:-1]] == [1] * 30  # type: ignore[call-overload]
    assert isinstance(results[-1], CrossSlotKeys)


async def test_auto_pipeline_reloads_scripts_after_a_script_flush() -> None:
    take = script("mall.touch", "take")
    await get_redis().script_flush()  # as after a restart without AOF: EVALSHA misses
    pipeline = mall_redis.auto_pipeline()
    results = await asyncio.gather(
        *(pipeline.run(take, [f"touch:{{m:{m}}}:202502"], [3, 60, "0"]) for m in range(12))
    )
    assert [int(r) for r in results] == [1] * 12


async def test_auto_pipeline_sends_plain_commands_with_the_scripts_in_one_round_trip() -> None:
    take = script("mall.touch", "take")
    await get_redis().hset("{m:7}:idem", mapping={"a": "won-1", "b": "won-2"})
    pipeline = auto_pipeline()
    await pipeline.call("HGET", "{m:7}:idem", "a")  # (a connection made and checked)
    sent: list[int] = []
    write = AbstractConnection.send_packed_command

    async def counting(self: AbstractConnection, *args: Any, **kwargs: Any) -> None:
        sent.append(1)
        await write(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AbstractConnection, "send_packed_command", counting)
        results = await asyncio.gather(
            pipeline.call("HGET", "{m:7}:idem", "a"),
            pipeline.run(take, ["touch:{m:7}:202503"], [3, 60, "0"]),
            pipeline.call("HGET", "{m:7}:idem", "b"),
            pipeline.call("HGET", "{m:7}:idem", "missing"),
        )
    assert results[0] == "won-1" and int(results[1]) == 1
    assert results[2:] == ["won-2", None]
    assert sent == [1]


async def test_auto_pipeline_answers_after_redis_dropped_its_connections() -> None:
    pipeline = auto_pipeline()
    await get_redis().set("{m:8}:k", "v")
    assert await pipeline.call("GET", "{m:8}:k") == "v"  # a pooled connection now
    # Redis drops every client connection (a restart, a proxy's idle cut): on a cluster,
    # every node
    kill = ("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "no")
    client = get_redis()
    if isinstance(client, RedisCluster):
        await client.execute_command("CLIENT KILL", *kill[2:], target_nodes=RedisCluster.ALL_NODES)
    else:
        await client.execute_command(*kill)
    results = await asyncio.gather(*(pipeline.call("GET", "{m:8}:k") for _ in range(3)))
    assert results == ["v"] * 3
