"""Task algorithms built on an unconditional or conditional score function.

``repaint``  RePaint inpainting with resampling jumps (any unconditional score)
"""

from diffjax.tasks.repaint import repaint, repaint_nfe, repaint_schedule

__all__ = ["repaint", "repaint_schedule", "repaint_nfe"]
