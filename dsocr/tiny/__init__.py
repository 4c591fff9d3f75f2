"""A tiny, randomly initialised DeepSeek-OCR-2 checkpoint of the real transformers classes: what `./start.sh demo`
serves (see `dsocr.demo`) and what the tests run the service on. `tokenizer` needs only tokenizers and
transformers (any version the service supports); `checkpoint` needs the native DeepSeek-OCR-2 classes
(transformers >= 5.17)."""
