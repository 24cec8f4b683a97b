"""EmbeddedRedisCluster: three real masters sharing the slots, restart, clean stop."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from obol_cli.embedded import (
    CLUSTER_BUS_OFFSET,
    CLUSTER_SLOTS,
    EmbeddedRedis,
    EmbeddedRedisCluster,
    EmbeddedServerError,
    free_cluster_port,
)

from .helpers import alive, wait_gone


def _slots(cluster: EmbeddedRedisCluster) -> list[tuple[int, int, int]]:
    """(first slot, last slot, port of its master) as the cluster itself reports them."""
    client = RedisCluster.from_url(cluster.url.replace("+cluster", ""))
    try:
        reply = client.execute_command("CLUSTER SLOTS", target_nodes=RedisCluster.RANDOM)
    finally:
        client.close()
    return sorted((first, last, port) for (first, last), (_, port) in _ranges(reply))


def _ranges(reply: object) -> list[tuple[tuple[int, int], tuple[str, int]]]:
    # redis-py parses CLUSTER SLOTS into {(first, last): {"primary": (host, port), ...}}
    assert isinstance(reply, dict)
    return [((first, last), nodes["primary"]) for (first, last), nodes in reply.items()]


def test_three_masters_serve_every_slot_and_stop_leaves_nothing(tmp_path: Path) -> None:
    cluster = EmbeddedRedisCluster(tmp_path / "cluster")
    with cluster:
        pids = cluster.pids
        assert len(pids) == 3 and all(alive(pid) for pid in pids)
        ranges = cluster.slot_ranges()
        assert ranges[0][0] == 0 and ranges[-1][1] == CLUSTER_SLOTS - 1
        assert _slots(cluster) == [
            (first, last, node.port)
            for (first, last), node in zip(ranges, cluster.nodes, strict=True)
        ]
        client = RedisCluster.from_url(cluster.url.replace("+cluster", ""))
        try:
            masters = client.get_primaries()
            assert sorted(node.port for node in masters) == sorted(cluster.ports)
            assert client.get_replicas() == []
            for n in range(30):  # keys of all slots are served
                client.set(f"key-{n}", n)
            assert [int(client.get(f"key-{n}") or -1) for n in range(30)] == list(range(30))
        finally:
            client.close()
        for node in cluster.nodes:
            assert (node.data_dir / "nodes.conf").is_file()
    assert not wait_gone(pids)
    for port in cluster.ports:
        with pytest.raises(ConnectionRefusedError):  # nobody listens any more
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    cluster.stop()  # idempotent


def test_a_restarted_cluster_keeps_its_slots_and_data(tmp_path: Path) -> None:
    cluster = EmbeddedRedisCluster(tmp_path / "cluster")
    with cluster:
        before = _slots(cluster)
        client = RedisCluster.from_url(cluster.url.replace("+cluster", ""))
        client.set("{p1}:balance", 100)
        client.set("{p3}:balance", 300)
        client.close()
    with cluster:  # same ports: the nodes find each other through nodes.conf
        assert _slots(cluster) == before
        client = RedisCluster.from_url(cluster.url.replace("+cluster", ""))
        try:
            assert (client.get("{p1}:balance"), client.get("{p3}:balance")) == (b"100", b"300")
        finally:
            client.close()


def test_a_node_that_cannot_start_fails_the_start_and_stops_the_others(
    tmp_path: Path,
) -> None:
    cluster = EmbeddedRedisCluster(tmp_path / "cluster")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", cluster.nodes[1].port))
        squatter.listen()
        with pytest.raises(EmbeddedServerError, match="exited with code"):
            cluster.start()
    assert cluster.pids == []


def test_cluster_ports_leave_room_for_the_bus() -> None:
    ports: list[int] = []
    for _ in range(5):
        ports.append(free_cluster_port(ports))
    used = [q for port in ports for q in (port, port + CLUSTER_BUS_OFFSET)]
    assert len(set(used)) == 10  # no node's port is another's bus port
    for port in ports:
        assert port + CLUSTER_BUS_OFFSET <= 65535
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port + CLUSTER_BUS_OFFSET))


def test_rejects_what_cannot_be_a_cluster(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one master"):
        EmbeddedRedisCluster(tmp_path, masters=0)
    with pytest.raises(ValueError, match="cluster bus"):
        EmbeddedRedis(tmp_path, 60000, cluster=True)


def test_a_cluster_node_is_a_plain_server_until_it_joins(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "node", free_cluster_port(), cluster=True) as node:
        client = redis.Redis(host="127.0.0.1", port=node.port)
        try:
            info = client.info("cluster")
            assert info["cluster_enabled"] == 1
            with pytest.raises(redis.exceptions.ResponseError, match="slot not served"):
                client.set("k", "v")  # CLUSTERDOWN: no slots yet
        finally:
            client.close()
