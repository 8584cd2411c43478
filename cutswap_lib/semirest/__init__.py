"""SemiREST (Li et al.): position-constrained PatchCore residuals as transformer tokens.

One module per idea, each citing the paper's section and equations:

* :mod:`.position`  – the 2-D sinusoidal position code, Eq. (3), and the PCF sum, Eq. (2)
* :mod:`.residuals` – position-constrained features, the coreset memory bank and the
  residual tokens ``(B, h_f, w_f, d_f)``, Eq. (1)-(6), Sec. 3.1.1

Taught in ``notebooks/04_semirest_residuals.ipynb`` (not yet written).
"""

from .position import add_position_code, position_code
from .residuals import (RESIDUAL_MODES, PositionConstrainedFeatures, ResidualMatch, ResidualMemory,
                        elementwise_residual, nearest_residuals)

__all__ = [
    "RESIDUAL_MODES", "PositionConstrainedFeatures", "ResidualMatch", "ResidualMemory",
    "add_position_code", "elementwise_residual", "nearest_residuals", "position_code",
]
