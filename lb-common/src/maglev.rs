//! Maglev lookup-table construction (being written).
