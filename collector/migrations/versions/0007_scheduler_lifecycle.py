"""scheduler lifecycle and metadata on jobs (Slurm prolog/epilog events)

Revision ID: 0007_scheduler
Revises: d17_declared_usage
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = '0007_scheduler'
down_revision = 'd17_declared_usage'
branch_labels = None
depends_on = None

_TEXT = {
    'scheduler': 32, 'partition': 256, 'qos': 256, 'array_job_id': 128, 'array_task_id': 128,
    'het_job_id': 128, 'het_job_offset': 128, 'node_list': 4096, 'scheduler_state': 64, 'exit_code': 64,
}


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        for name, length in _TEXT.items():
            batch.add_column(sa.Column(name, sa.String(length=length), nullable=True))
        batch.add_column(sa.Column('alloc_gpus', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('scheduler_started_s', sa.Float(), nullable=True))
        batch.add_column(sa.Column('scheduler_ended_s', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        for name in ('scheduler_ended_s', 'scheduler_started_s', 'alloc_gpus', *reversed(_TEXT)):
            batch.drop_column(name)
