/*
 * sdp.h - what the engine does to SDP text before libosip2 reads it.
 */
#ifndef SIP_SDP_H
#define SIP_SDP_H

#include <stddef.h>

/* A copy with every line ended by CRLF (a bare LF or a missing last line
 * end becomes CRLF): libosip2's sdp_message_parse reads past the end of
 * some LF-only input. NULL when out of memory; free() the result. */
char *sip_sdp_normalize(const char *text, size_t n);

#endif
