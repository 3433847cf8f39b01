/*
 * fuzz_sdp.c - SDP bodies as the library reads them: libosip2's
 * sdp_message_parse and every accessor csrc/l_sdp.c walks (origin,
 * session and media connection addresses, m-lines, payloads, attributes),
 * on whatever a peer could put in an offer or an answer.
 */
#define _GNU_SOURCE
#include <osipparser2/sdp_message.h>
#include "sdp.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void fuzz_init(void);
void fuzz_reset_random(void);
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile unsigned sink;

static void touch(const char *s)
{
	if (s)
		while (*s)
			sink += (unsigned char)*s++;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_init();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	sdp_message_t *sdp = NULL;
	char *text;
	int m, i;

	if (size > 65536)
		return 0;
	/* what l_sdp.c hands libosip2 */
	text = sip_sdp_normalize((const char *)data, size);
	if (!text)
		return 0;
	if (sdp_message_init(&sdp) != 0) {
		free(text);
		return 0;
	}
	if (sdp_message_parse(sdp, text) == 0) {
		touch(sdp->v_version);
		touch(sdp_message_o_username_get(sdp));
		touch(sdp_message_o_sess_id_get(sdp));
		touch(sdp_message_o_sess_version_get(sdp));
		touch(sdp_message_o_addr_get(sdp));
		touch(sdp_message_s_name_get(sdp));
		touch(sdp_message_c_addr_get(sdp, -1, 0));
		for (i = 0; sdp_message_a_att_field_get(sdp, -1, i); i++) {
			touch(sdp_message_a_att_field_get(sdp, -1, i));
			touch(sdp_message_a_att_value_get(sdp, -1, i));
		}
		for (m = 0; sdp_message_m_media_get(sdp, m); m++) {
			touch(sdp_message_m_media_get(sdp, m));
			touch(sdp_message_m_port_get(sdp, m));
			touch(sdp_message_m_proto_get(sdp, m));
			touch(sdp_message_c_addr_get(sdp, m, 0));
			for (i = 0; sdp_message_m_payload_get(sdp, m, i); i++)
				touch(sdp_message_m_payload_get(sdp, m, i));
			for (i = 0; sdp_message_a_att_field_get(sdp, m, i); i++) {
				touch(sdp_message_a_att_field_get(sdp, m, i));
				touch(sdp_message_a_att_value_get(sdp, m, i));
			}
		}
	}
	sdp_message_free(sdp);
	free(text);
	return 0;
}
