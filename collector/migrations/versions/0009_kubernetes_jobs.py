"""Kubernetes jobs: a job's namespace, and the pods it has run in

Revision ID: k19_kubernetes
Revises: 0008_storage_tiers
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = 'k19_kubernetes'
down_revision = '0008_storage_tiers'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch_op:
        batch_op.add_column(sa.Column('namespace', sa.String(length=256), nullable=True))
    op.create_table(
        'job_pods',
        sa.Column('job_id', sa.String(length=300), nullable=False),
        sa.Column('pod', sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint('job_id', 'pod'),
    )


def downgrade() -> None:
    op.drop_table('job_pods')
    with op.batch_alter_table('jobs') as batch_op:
        batch_op.drop_column('namespace')
