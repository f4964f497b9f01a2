"""Wire keys of the model stream, under the names the streaming code uses; the values live in :mod:`flaretune.keys`.

Every chunk message says what it is, so a receiver can check it on its own. A chunk message carries: file
name, chunk index, offset, length, chunk sha256, file size, file sha256, and one slice of the chunk's data
(its file offset, and whether it is the chunk's last slice). A reply carries a status: ``ok``, ``nack``
(the chunk was refused: send it again) or ``fail`` (give up); the sender records a missing reply as
``lost`` (send it again after a pause).
"""

from flaretune.keys import (  # noqa: F401 (the streaming modules read these as P.<NAME>)
    KEY_CHUNK_SHA,
    KEY_DATA,
    KEY_DEST,
    KEY_FILE,
    KEY_FILE_SHA,
    KEY_FILE_SIZE,
    KEY_INDEX,
    KEY_KIND,
    KEY_LAST,
    KEY_LENGTH,
    KEY_MANIFEST,
    KEY_METRICS,
    KEY_MODEL_NAME,
    KEY_NEED,
    KEY_NUM_EXAMPLES,
    KEY_OFFSET,
    KEY_PUBLISHED,
    KEY_PUSH_ID,
    KEY_REASON,
    KEY_RESULT,
    KEY_ROUND,
    KEY_SLICE_OFFSET,
    KEY_STATUS,
    KEY_UPDATE,
    KIND_CHUNK,
    KIND_DONE,
    PUSHED_MODEL_DIR,
    STATUS_FAIL,
    STATUS_LOST,
    STATUS_NACK,
    STATUS_OK,
)
from flaretune.keys import STREAM_CHANNEL as CHANNEL  # noqa: F401
from flaretune.keys import STREAM_PREFIX as PREFIX  # noqa: F401
from flaretune.keys import STREAM_TASK_NAME as TASK_NAME  # noqa: F401
from flaretune.keys import STREAM_TOPIC as TOPIC  # noqa: F401
from flaretune.keys import STREAM_UPDATE_TOPIC as UPDATE_TOPIC  # noqa: F401
