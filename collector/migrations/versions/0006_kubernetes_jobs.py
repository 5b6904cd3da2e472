"""Kubernetes jobs: a job's namespace, and the pods it has run in

Revision ID: 0006_kubernetes
Revises: 0005
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = '0006_kubernetes'
down_revision = '0005'
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
