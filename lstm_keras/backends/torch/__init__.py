"""The torch fast path: torch's own fused LSTM kernel (`torch._VF.lstm`)."""
