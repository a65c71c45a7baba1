import Foundation

/// Networks built into mpcd, so the embedded default configuration needs no file on disk.
/// `scripts/embed_networks.py` writes EmbeddedNetworkData.swift from `deploy/networks/*.safetensors`;
/// a test checks the two agree.
public enum EmbeddedNetworks {
    public static var names: [String] { embeddedNetworkData.keys.sorted() }

    public static func data(named name: String) -> Data? {
        embeddedNetworkData[name].flatMap { Data(base64Encoded: $0) }
    }
}
