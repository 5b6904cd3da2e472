"""declared usage, release labels, energy source columns (issue 17)

Revision ID: d17_declared_usage
Revises: 0005
Create Date: 2026-12-01

Self-contained: it adds columns and a table and touches nothing else, so it can be re-chained
after other revisions (only down_revision changes).
"""

import sqlalchemy as sa
from alembic import op

revision = 'd17_declared_usage'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('release', sa.String(length=256), nullable=True))
        batch.add_column(sa.Column('source', sa.String(length=16), nullable=False, server_default='agent'))
        batch.create_index('ix_jobs_release', ['release'], unique=False)
    with op.batch_alter_table('job_hours') as batch:
        batch.add_column(sa.Column('energy_declared_j', sa.Float(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('energy_estimated_j', sa.Float(), nullable=False, server_default='0'))
    op.create_table(
        'declared_usage',
        sa.Column('row_key', sa.String(length=64), primary_key=True),
        sa.Column('job_id', sa.String(length=300), nullable=False),
        sa.Column('datacenter', sa.String(length=128), nullable=False),
        sa.Column('gpu_model', sa.String(length=128), nullable=False),
        sa.Column('start_s', sa.Float(), nullable=False),
        sa.Column('end_s', sa.Float(), nullable=False),
        sa.Column('gpu_seconds', sa.Float(), nullable=False),
        sa.Column('energy_j', sa.Float(), nullable=False),
        sa.Column('energy_source', sa.String(length=16), nullable=False),
        sa.Column('power_w', sa.Float(), nullable=True),
        sa.Column('imported_at_s', sa.Float(), nullable=False),
    )
    op.create_index('ix_declared_usage_job_id', 'declared_usage', ['job_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_declared_usage_job_id', table_name='declared_usage')
    op.drop_table('declared_usage')
    with op.batch_alter_table('job_hours') as batch:
        batch.drop_column('energy_estimated_j')
        batch.drop_column('energy_declared_j')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_index('ix_jobs_release')
        batch.drop_column('source')
        batch.drop_column('release')
