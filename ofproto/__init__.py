"""flowpath ofproto."""
