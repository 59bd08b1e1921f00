"""Image descriptors: decoding, preprocessing and the ONNX backbone, shared by both services."""

from imgsearch.model.encoder import ImageEncoder
from imgsearch.model.preprocess import DecodedImage, decode_image

__all__ = ["DecodedImage", "ImageEncoder", "decode_image"]
