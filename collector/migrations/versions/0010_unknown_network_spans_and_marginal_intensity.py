"""network spans whose counter increase is unknown; a separate marginal (MOER) intensity series

Revision ID: 0009_unknown_moer
Revises: k19_kubernetes
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = '0009_unknown_moer'
down_revision = 'k19_kubernetes'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('job_net_hours', schema=None) as batch_op:
        batch_op.add_column(sa.Column('unknown_seconds', sa.Float(), server_default='0', nullable=False))
    op.create_table('grid_marginal_intensity',
    sa.Column('region', sa.String(length=128), nullable=False),
    sa.Column('hour_s', sa.BigInteger(), nullable=False),
    sa.Column('g_per_kwh', sa.Float(), nullable=False),
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('estimated', sa.Boolean(), nullable=False),
    sa.Column('updated_at_s', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('region', 'hour_s')
    )


def downgrade() -> None:
    op.drop_table('grid_marginal_intensity')
    with op.batch_alter_table('job_net_hours', schema=None) as batch_op:
        batch_op.drop_column('unknown_seconds')
