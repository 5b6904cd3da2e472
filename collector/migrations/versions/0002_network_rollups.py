"""network rollups

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('job_net_hours',
    sa.Column('job_id', sa.String(length=300), nullable=False),
    sa.Column('hour_s', sa.BigInteger(), nullable=False),
    sa.Column('node', sa.String(length=128), nullable=False),
    sa.Column('seconds', sa.Float(), nullable=False),
    sa.Column('ports', sa.Integer(), nullable=False),
    sa.Column('tx_bytes', sa.Float(), nullable=True),
    sa.Column('rx_bytes', sa.Float(), nullable=True),
    sa.Column('tx_packets', sa.Float(), nullable=True),
    sa.Column('rx_packets', sa.Float(), nullable=True),
    sa.Column('cnp_sent', sa.Float(), nullable=True),
    sa.Column('cnp_handled', sa.Float(), nullable=True),
    sa.Column('ecn_marked_packets', sa.Float(), nullable=True),
    sa.Column('retransmits', sa.Float(), nullable=True),
    sa.Column('out_of_sequence', sa.Float(), nullable=True),
    sa.Column('timeouts', sa.Float(), nullable=True),
    sa.Column('apportioned_bytes', sa.Float(), nullable=False),
    sa.Column('peak_tx_gbps', sa.Float(), nullable=False),
    sa.Column('peak_rx_gbps', sa.Float(), nullable=False),
    sa.Column('peak_link_util_pct', sa.Float(), nullable=True),
    sa.Column('link_down_port_seconds', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('job_id', 'hour_s', 'node')
    )


def downgrade() -> None:
    op.drop_table('job_net_hours')
