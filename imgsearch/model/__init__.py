"""Image descriptors: decoding, preprocessing and the ONNX backbone, shared by both services."""

from imgsearch.model.encoder import REGIONS_PER_IMAGE, ImageEncoder, QueryDescription
from imgsearch.model.preprocess import DecodedImage, decode_image

__all__ = [
    "REGIONS_PER_IMAGE",
    "DecodedImage",
    "ImageEncoder",
    "QueryDescription",
    "decode_image",
]
