"""How each camera's frames cross the network, chosen per view in config.

``raw``: sensor_msgs/Image on the camera's topic. ``compressed``: sensor_msgs/CompressedImage (JPEG or
PNG), as image_transport's ``compressed`` plugin publishes it on ``<topic>/compressed``: a tenth of
the bytes or less, for cameras on another machine or a busy link. Frames are decoded once, by the node
that needs pixels (observation_sync for the observation sets, the LeRobot robot plugin for LeRobot).
"""

from __future__ import annotations

from collections.abc import Sequence

IMAGE_TRANSPORTS: tuple[str, ...] = ("raw", "compressed")


def per_view(views: Sequence[str], transports: Sequence[str], what: str = "transports") -> dict[str, str]:
    """``{view: transport}`` from one transport per view, or one for every view; ValueError naming
    ``what`` on a wrong count or an unknown transport."""
    transports = list(transports)
    if len(transports) == 1:
        transports = transports * len(views)
    if len(transports) != len(views):
        raise ValueError(f"{what}: expected one transport per view {list(views)} (or one for all), got {transports}")
    unknown = [t for t in transports if t not in IMAGE_TRANSPORTS]
    if unknown:
        raise ValueError(f"{what}: expected each of {list(IMAGE_TRANSPORTS)}, got {unknown}")
    return dict(zip(views, transports, strict=True))
