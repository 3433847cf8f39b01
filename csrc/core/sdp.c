/*
 * sdp.c - SDP text made safe for libosip2's parser (see sdp.h).
 */
#include "sdp.h"

#include <stdlib.h>

char *sip_sdp_normalize(const char *text, size_t n)
{
	char *out = malloc(2 * n + 3), *o = out;
	size_t i;

	if (!out)
		return NULL;
	for (i = 0; i < n; i++) {
		if (text[i] == '\n' && (i == 0 || text[i - 1] != '\r'))
			*o++ = '\r';
		*o++ = text[i];
	}
	if (o == out || o[-1] != '\n') {
		*o++ = '\r';
		*o++ = '\n';
	}
	*o = '\0';
	return out;
}
