"""index raw intervals by job, for a job's time series

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_gpu_intervals_job_id_end_s', 'gpu_intervals', ['job_id', 'end_s'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_gpu_intervals_job_id_end_s', table_name='gpu_intervals')
