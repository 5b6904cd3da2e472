"""batch content hash (a replay must be identical), raw intervals by GPU and time (no GPU's
time stored twice), who set a job's metadata (agents cannot override an admin or the scheduler)

Revision ID: d16_integrity
Revises: 0009_unknown_moer
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = 'd16_integrity'
down_revision = '0009_unknown_moer'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('ingested_batches') as batch:
        batch.add_column(sa.Column('content_hash', sa.String(length=64), nullable=True))
    op.create_index('ix_raw_intervals_gpu_key_end_s', 'raw_intervals', ['gpu_key', 'end_s'], unique=False)
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('metadata_source', sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('metadata_source')
    op.drop_index('ix_raw_intervals_gpu_key_end_s', table_name='raw_intervals')
    with op.batch_alter_table('ingested_batches') as batch:
        batch.drop_column('content_hash')
