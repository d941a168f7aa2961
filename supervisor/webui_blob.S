/* webui_blob.S: web/index.html built into the binary as sdw_webui_index[] and its length, so the page
 * ships with the executable and nothing is generated into the source tree. */
    .section .rodata
    .global sdw_webui_index
    .global sdw_webui_index_len
    .balign 16
sdw_webui_index:
    .incbin SDW_WEB_INDEX
sdw_webui_index_end:
    .balign 8
sdw_webui_index_len:
    .quad sdw_webui_index_end - sdw_webui_index
    .section .note.GNU-stack, "", @progbits
