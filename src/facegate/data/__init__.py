"""Data layer: safe image decoding, datasets (image folders, RecordIO, synthetic), verification pairs, storage."""
