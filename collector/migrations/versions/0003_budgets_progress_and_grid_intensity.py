"""budgets, progress and grid intensity

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('grid_intensity',
    sa.Column('region', sa.String(length=128), nullable=False),
    sa.Column('hour_s', sa.BigInteger(), nullable=False),
    sa.Column('g_per_kwh', sa.Float(), nullable=False),
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('estimated', sa.Boolean(), nullable=False),
    sa.Column('updated_at_s', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('region', 'hour_s')
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('budget_usd', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('budget_co2e_kg', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('steps_done', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('total_steps', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('expected_end_s', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('progress_at_s', sa.Float(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('progress_at_s')
        batch_op.drop_column('expected_end_s')
        batch_op.drop_column('total_steps')
        batch_op.drop_column('steps_done')
        batch_op.drop_column('budget_co2e_kg')
        batch_op.drop_column('budget_usd')

    op.drop_table('grid_intensity')
