"""storage tiers: raw intervals with dimension keys, per-minute rollups, day partitions

Moves every row of gpu_intervals into raw_intervals (strings replaced by job_keys, places and
gpu_keys), derives job_minutes from them, and drops gpu_intervals. On PostgreSQL both new
tables are range-partitioned; the migrated rows land in their DEFAULT partitions, which
retention prunes row by row, and the server creates the day partitions from then on.

Revision ID: 0008_storage_tiers
Revises: 0007_scheduler
Create Date: 2026-12-01
"""

from collections import defaultdict

import sqlalchemy as sa
from alembic import op

from agent.energy import MEASURED, METHODS
from collector.db import insert_for
from collector.partitions import create_default_partitions
from collector.pieces import split_by_step

revision = '0008_storage_tiers'
down_revision = '0007_scheduler'
branch_labels = None
depends_on = None

CHUNK = 20_000
METHOD_CASE = "CASE g.energy_method " + " ".join(f"WHEN '{m}' THEN {n}" for n, m in enumerate(METHODS)) + " ELSE 3 END"
METHOD_NAME = "CASE r.method " + " ".join(f"WHEN {n} THEN '{m}'" for n, m in enumerate(METHODS)) + " END"
ADDED = ('gpu_seconds', 'busy_gpu_seconds', 'energy_j', 'energy_counter_j')


def _create_tables(pg: bool) -> None:
    op.create_table('job_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.String(length=300), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('job_id'),
    )
    op.create_table('places',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('node', sa.String(length=128), nullable=False),
    sa.Column('datacenter', sa.String(length=128), nullable=False),
    sa.Column('gpu_model', sa.String(length=128), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('node', 'datacenter', 'gpu_model', name='uq_places_node_datacenter_gpu_model'),
    )
    op.create_table('gpu_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('place_id', sa.Integer(), nullable=False),
    sa.Column('gpu_uuid', sa.String(length=128), nullable=False),
    sa.ForeignKeyConstraint(['place_id'], ['places.id']),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('place_id', 'gpu_uuid', name='uq_gpu_keys_place_id_gpu_uuid'),
    )
    op.create_table('raw_intervals',
    sa.Column('gpu_key', sa.Integer(), nullable=False),
    sa.Column('job_key', sa.Integer(), nullable=False),
    sa.Column('start_s', sa.Float(), nullable=False),
    sa.Column('end_s', sa.Float(), nullable=False),
    sa.Column('gpu_seconds', sa.Float(), nullable=False),
    sa.Column('busy_gpu_seconds', sa.Float(), nullable=False),
    sa.Column('energy_j', sa.Float(), nullable=False),
    sa.Column('method', sa.SmallInteger(), nullable=False),
    sa.Column('max_memory_used_bytes', sa.BigInteger(), nullable=True),
    postgresql_partition_by='RANGE (end_s)',
    )
    op.create_index('ix_raw_intervals_job_key_end_s', 'raw_intervals', ['job_key', 'end_s'], unique=False)
    op.create_index('ix_raw_intervals_end_s', 'raw_intervals', ['end_s'], unique=False, postgresql_using='brin')
    op.create_table('job_minutes',
    sa.Column('job_key', sa.Integer(), nullable=False),
    sa.Column('minute_s', sa.BigInteger(), nullable=False),
    sa.Column('place_key', sa.Integer(), nullable=False),
    sa.Column('gpu_seconds', sa.Float(), nullable=False),
    sa.Column('busy_gpu_seconds', sa.Float(), nullable=False),
    sa.Column('energy_j', sa.Float(), nullable=False),
    sa.Column('energy_counter_j', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('job_key', 'minute_s', 'place_key'),
    postgresql_partition_by='RANGE (minute_s)',
    )
    if pg:
        create_default_partitions(op.execute)


def _carry_keys_and_rows() -> None:
    op.execute("INSERT INTO job_keys (job_id) SELECT DISTINCT job_id FROM gpu_intervals ORDER BY job_id")
    op.execute("INSERT INTO places (node, datacenter, gpu_model) "
               "SELECT DISTINCT node, datacenter, gpu_model FROM gpu_intervals ORDER BY node, datacenter, gpu_model")
    op.execute("INSERT INTO gpu_keys (place_id, gpu_uuid) SELECT DISTINCT p.id, g.gpu_uuid FROM gpu_intervals g "
               "JOIN places p ON p.node = g.node AND p.datacenter = g.datacenter AND p.gpu_model = g.gpu_model "
               "ORDER BY p.id, g.gpu_uuid")
    op.execute(
        "INSERT INTO raw_intervals (gpu_key, job_key, start_s, end_s, gpu_seconds, busy_gpu_seconds, energy_j, method, "
        "max_memory_used_bytes) SELECT k.id, j.id, g.start_s, g.end_s, g.gpu_seconds, g.busy_gpu_seconds, g.energy_j, "
        f"{METHOD_CASE}, g.max_memory_used_bytes FROM gpu_intervals g "
        "JOIN places p ON p.node = g.node AND p.datacenter = g.datacenter AND p.gpu_model = g.gpu_model "
        "JOIN gpu_keys k ON k.place_id = p.id AND k.gpu_uuid = g.gpu_uuid JOIN job_keys j ON j.job_id = g.job_id ORDER BY g.id"
    )


def _derive_minutes() -> None:
    """The minute tier of the carried rows, as collector.ingest derives it, a chunk at a time."""
    conn = op.get_bind()
    minutes = sa.table('job_minutes', *(sa.column(n) for n in ('job_key', 'minute_s', 'place_key', *ADDED)))
    query = sa.text(
        "SELECT g.id, j.id, p.id, g.start_s, g.end_s, g.gpu_seconds, g.busy_gpu_seconds, g.energy_j, g.energy_method "
        "FROM gpu_intervals g JOIN job_keys j ON j.job_id = g.job_id "
        "JOIN places p ON p.node = g.node AND p.datacenter = g.datacenter AND p.gpu_model = g.gpu_model "
        "WHERE g.id > :after ORDER BY g.id LIMIT :chunk")
    after = -1
    while rows := conn.execute(query, {"after": after, "chunk": CHUNK}).all():
        after = rows[-1][0]
        sums: dict[tuple[int, int, int], list[float]] = defaultdict(lambda: [0.0] * 4)
        for _id, job, place, start_s, end_s, gpu_s, busy_s, energy_j, method in rows:
            values = [gpu_s, busy_s, energy_j, energy_j if method in MEASURED else 0.0]
            for minute, share in split_by_step(start_s, end_s, values, 60):
                row = sums[(job, minute, place)]
                for n in range(4):
                    row[n] += share[n]
        stmt = insert_for(conn, minutes)
        stmt = stmt.on_conflict_do_update(index_elements=['job_key', 'minute_s', 'place_key'],
                                          set_={n: minutes.c[n] + stmt.excluded[n] for n in ADDED})
        conn.execute(stmt, [{'job_key': j, 'minute_s': m, 'place_key': p, **dict(zip(ADDED, v, strict=True))}
                            for (j, m, p), v in sorted(sums.items())])


def upgrade() -> None:
    pg = op.get_bind().dialect.name == 'postgresql'
    _create_tables(pg)
    _carry_keys_and_rows()
    _derive_minutes()
    op.drop_table('gpu_intervals')  # with its indexes


def downgrade() -> None:
    op.create_table('gpu_intervals',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('node', sa.String(length=128), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('datacenter', sa.String(length=128), nullable=False),
    sa.Column('gpu_uuid', sa.String(length=128), nullable=False),
    sa.Column('gpu_model', sa.String(length=128), nullable=False),
    sa.Column('job_id', sa.String(length=300), nullable=False),
    sa.Column('start_s', sa.Float(), nullable=False),
    sa.Column('end_s', sa.Float(), nullable=False),
    sa.Column('gpu_seconds', sa.Float(), nullable=False),
    sa.Column('busy_gpu_seconds', sa.Float(), nullable=False),
    sa.Column('energy_j', sa.Float(), nullable=False),
    sa.Column('energy_method', sa.String(length=32), nullable=False),
    sa.Column('max_memory_used_bytes', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_gpu_intervals_end_s', 'gpu_intervals', ['end_s'], unique=False)
    op.create_index('ix_gpu_intervals_job_id_end_s', 'gpu_intervals', ['job_id', 'end_s'], unique=False)
    op.execute(  # batch sequence numbers are not kept in the raw tier: 0
        "INSERT INTO gpu_intervals (node, seq, datacenter, gpu_uuid, gpu_model, job_id, start_s, end_s, gpu_seconds, "
        "busy_gpu_seconds, energy_j, energy_method, max_memory_used_bytes) SELECT p.node, 0, p.datacenter, k.gpu_uuid, "
        f"p.gpu_model, j.job_id, r.start_s, r.end_s, r.gpu_seconds, r.busy_gpu_seconds, r.energy_j, {METHOD_NAME}, "
        "r.max_memory_used_bytes FROM raw_intervals r JOIN gpu_keys k ON k.id = r.gpu_key "
        "JOIN places p ON p.id = k.place_id JOIN job_keys j ON j.id = r.job_key ORDER BY r.end_s"
    )
    for table in ('job_minutes', 'raw_intervals', 'gpu_keys', 'places', 'job_keys'):
        op.drop_table(table)  # PostgreSQL drops the partitions with their table
