"""Operations: logging, and (later) metrics, memory management and reports."""
