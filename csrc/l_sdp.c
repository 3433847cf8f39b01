/***
 * sip.core.sdp_parse - SDP text to a Lua table, with libosip2's parser.
 * lua/sip/sdp.lua builds offers and answers on top of it.
 * @module sip.core
 */
#include "lsip.h"

#include <stdlib.h>
#include <string.h>
#include <osipparser2/sdp_message.h>
#include "core/sdp.h"

static void set_s(lua_State *L, const char *k, const char *v)
{
	if (v) {
		lua_pushstring(L, v);
		lua_setfield(L, -2, k);
	}
}

/* attributes of session (pos_media -1) or of one media as a list of
 * { name =, value = } plus the direction when one is given */
static void push_attributes(lua_State *L, sdp_message_t *sdp, int pos_media)
{
	int i;
	const char *dir = NULL;

	lua_newtable(L);
	for (i = 0;; i++) {
		char *f = sdp_message_a_att_field_get(sdp, pos_media, i);
		char *v;
		if (!f)
			break;
		v = sdp_message_a_att_value_get(sdp, pos_media, i);
		if (!strcmp(f, "sendrecv") || !strcmp(f, "sendonly") || !strcmp(f, "recvonly") ||
		    !strcmp(f, "inactive"))
			dir = f;
		lua_createtable(L, 0, 2);
		set_s(L, "name", f);
		set_s(L, "value", v);
		lua_rawseti(L, -2, i + 1);
	}
	lua_setfield(L, -2, "attributes");
	set_s(L, "direction", dir);
}

/***
 * Parse SDP text.
 * @function sdp_parse
 * @string text
 * @treturn table or fail, message
 */
static int l_sdp_parse(lua_State *L)
{
	size_t n;
	const char *raw = luaL_checklstring(L, 1, &n);
	sdp_message_t *sdp = NULL;
	char *text;
	int m, i, rc;

	if (sdp_message_init(&sdp) != 0)
		return luaL_error(L, "out of memory");
	/* every line ended by CRLF: libosip2 overreads some LF-only text */
	text = sip_sdp_normalize(raw, n);
	rc = text ? sdp_message_parse(sdp, text) : -1;
	free(text);
	if (rc != 0) {
		sdp_message_free(sdp);
		lua_pushnil(L);
		lua_pushstring(L, "sdp: unparsable");
		return 2;
	}
	lua_newtable(L);
	set_s(L, "version", sdp->v_version);
	lua_createtable(L, 0, 6);
	set_s(L, "username", sdp_message_o_username_get(sdp));
	set_s(L, "sess_id", sdp_message_o_sess_id_get(sdp));
	set_s(L, "sess_version", sdp_message_o_sess_version_get(sdp));
	set_s(L, "nettype", sdp_message_o_nettype_get(sdp));
	set_s(L, "addrtype", sdp_message_o_addrtype_get(sdp));
	set_s(L, "addr", sdp_message_o_addr_get(sdp));
	lua_setfield(L, -2, "origin");
	set_s(L, "name", sdp_message_s_name_get(sdp));
	set_s(L, "addr", sdp_message_c_addr_get(sdp, -1, 0));
	push_attributes(L, sdp, -1);
	lua_newtable(L);
	for (m = 0; sdp_message_m_media_get(sdp, m); m++) {
		lua_newtable(L);
		set_s(L, "media", sdp_message_m_media_get(sdp, m));
		lua_pushinteger(L, atoi(sdp_message_m_port_get(sdp, m) ? sdp_message_m_port_get(sdp, m) : "0"));
		lua_setfield(L, -2, "port");
		set_s(L, "proto", sdp_message_m_proto_get(sdp, m));
		set_s(L, "addr", sdp_message_c_addr_get(sdp, m, 0));
		lua_newtable(L);
		for (i = 0; sdp_message_m_payload_get(sdp, m, i); i++) {
			lua_pushstring(L, sdp_message_m_payload_get(sdp, m, i));
			lua_rawseti(L, -2, i + 1);
		}
		lua_setfield(L, -2, "formats");
		push_attributes(L, sdp, m);
		lua_rawseti(L, -2, m + 1);
	}
	lua_setfield(L, -2, "media");
	sdp_message_free(sdp);
	return 1;
}

int lsip_open_sdp(lua_State *L)
{
	lua_pushcfunction(L, l_sdp_parse);
	return 1;
}
