"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
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
    with op.batch_alter_table('gpu_intervals', schema=None) as batch_op:
        batch_op.create_index('ix_gpu_intervals_end_s', ['end_s'], unique=False)

    op.create_table('ingested_batches',
    sa.Column('node', sa.String(length=128), nullable=False),
    sa.Column('boot_id', sa.String(length=128), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('received_at_s', sa.Float(), nullable=False),
    sa.Column('interval_count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('node', 'boot_id', 'seq')
    )
    with op.batch_alter_table('ingested_batches', schema=None) as batch_op:
        batch_op.create_index('ix_ingested_batches_received_at_s', ['received_at_s'], unique=False)

    op.create_table('job_gpus',
    sa.Column('job_id', sa.String(length=300), nullable=False),
    sa.Column('node', sa.String(length=128), nullable=False),
    sa.Column('gpu_uuid', sa.String(length=128), nullable=False),
    sa.PrimaryKeyConstraint('job_id', 'node', 'gpu_uuid')
    )
    op.create_table('job_hours',
    sa.Column('job_id', sa.String(length=300), nullable=False),
    sa.Column('hour_s', sa.BigInteger(), nullable=False),
    sa.Column('datacenter', sa.String(length=128), nullable=False),
    sa.Column('gpu_model', sa.String(length=128), nullable=False),
    sa.Column('gpu_seconds', sa.Float(), nullable=False),
    sa.Column('busy_gpu_seconds', sa.Float(), nullable=False),
    sa.Column('energy_j', sa.Float(), nullable=False),
    sa.Column('energy_counter_j', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('job_id', 'hour_s', 'datacenter', 'gpu_model')
    )
    op.create_table('jobs',
    sa.Column('job_id', sa.String(length=300), nullable=False),
    sa.Column('cluster', sa.String(length=128), nullable=False),
    sa.Column('local_id', sa.String(length=128), nullable=False),
    sa.Column('name', sa.String(length=256), nullable=True),
    sa.Column('user', sa.String(length=256), nullable=True),
    sa.Column('account', sa.String(length=256), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('first_seen_s', sa.Float(), nullable=False),
    sa.Column('last_seen_s', sa.Float(), nullable=False),
    sa.Column('ended_s', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('job_id')
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_jobs_account'), ['account'], unique=False)
        batch_op.create_index('ix_jobs_first_seen_s', ['first_seen_s'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_state'), ['state'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_user'), ['user'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_user'))
        batch_op.drop_index(batch_op.f('ix_jobs_state'))
        batch_op.drop_index('ix_jobs_first_seen_s')
        batch_op.drop_index(batch_op.f('ix_jobs_account'))

    op.drop_table('jobs')
    op.drop_table('job_hours')
    op.drop_table('job_gpus')
    with op.batch_alter_table('ingested_batches', schema=None) as batch_op:
        batch_op.drop_index('ix_ingested_batches_received_at_s')

    op.drop_table('ingested_batches')
    with op.batch_alter_table('gpu_intervals', schema=None) as batch_op:
        batch_op.drop_index('ix_gpu_intervals_end_s')

    op.drop_table('gpu_intervals')
