#!/usr/bin/env python3
"""Independent check of the converted all-MiniLM-L6-v2 served by an engine: a plain numpy BERT
forward pass (WordPiece for simple ASCII text, mean pooling, L2 norm) over the original
safetensors, compared by cosine with the engine's /api/embed. Prints one line per text;
measured 0.999999 on 2026-11-23 (F16 matrices in the GGUF).

usage: reference_check.py [ENGINE_URL] [MODEL_DIR]
  defaults: http://127.0.0.1:11499  ~/.cache/wardbox/models/all-minilm-l6-v2
Needs numpy (the fetch script's venv has it: $WARDBOX_MODEL_CACHE/venv-gguf/bin/python).
"""
import os
import json, struct, sys, re, urllib.request
import numpy as np
url=sys.argv[1] if len(sys.argv)>1 else 'http://127.0.0.1:11499'
d=sys.argv[2] if len(sys.argv)>2 else os.path.expanduser('~/.cache/wardbox/models/all-minilm-l6-v2')
data=open(d+'/model.safetensors','rb').read(); n=struct.unpack('<Q',data[:8])[0]; h=json.loads(data[8:8+n])
W={k:np.frombuffer(data[8+n+v['data_offsets'][0]:8+n+v['data_offsets'][1]],dtype=np.float32).reshape(v['shape']) for k,v in h.items() if k!='__metadata__' and v['dtype']=='F32'}
vocab={t:i for i,t in enumerate(open(d+'/vocab.txt').read().split('\n'))}
def tok(s):
    ids=[101]
    for w in re.findall(r"\w+|[^\w\s]", s.lower()):
        st=0
        while st<len(w):
            e=len(w); cur=None
            while e>st:
                sub=w[st:e] if st==0 else '##'+w[st:e]
                if sub in vocab: cur=vocab[sub]; break
                e-=1
            if cur is None: ids.append(100); break
            ids.append(cur); st=e
    return ids+[102]
def ln(x,g,b,eps=1e-12):
    m=x.mean(-1,keepdims=True); v=((x-m)**2).mean(-1,keepdims=True); return (x-m)/np.sqrt(v+eps)*g+b
def gelu(x):
    from math import erf
    return 0.5*x*(1+np.vectorize(erf)(x/np.sqrt(2)))
def emb(s):
    ids=tok(s); T=len(ids)
    x=W['embeddings.word_embeddings.weight'][ids]+W['embeddings.position_embeddings.weight'][:T]+W['embeddings.token_type_embeddings.weight'][0]
    x=ln(x,W['embeddings.LayerNorm.weight'],W['embeddings.LayerNorm.bias'])
    for i in range(6):
        p=f'encoder.layer.{i}.'
        L=lambda name,y: y@W[p+name+'.weight'].T+W[p+name+'.bias']
        q=L('attention.self.query',x).reshape(T,12,32).transpose(1,0,2)
        k=L('attention.self.key',x).reshape(T,12,32).transpose(1,0,2)
        v=L('attention.self.value',x).reshape(T,12,32).transpose(1,0,2)
        a=q@k.transpose(0,2,1)/np.sqrt(32); a=np.exp(a-a.max(-1,keepdims=True)); a/=a.sum(-1,keepdims=True)
        o=(a@v).transpose(1,0,2).reshape(T,384)
        x=ln(x+L('attention.output.dense',o),W[p+'attention.output.LayerNorm.weight'],W[p+'attention.output.LayerNorm.bias'])
        f=L('output.dense',gelu(L('intermediate.dense',x)))
        x=ln(x+f,W[p+'output.LayerNorm.weight'],W[p+'output.LayerNorm.bias'])
    m=x.mean(0); return m/np.linalg.norm(m)
texts=["The patient has diabetes.","Blood sugar is high.","Start empagliflozin 10 mg once daily in addition to metformin."]
req=urllib.request.Request(url.rstrip('/')+'/api/embed',data=json.dumps({"model":"all-minilm:l6-v2","input":texts}).encode())
got=json.load(urllib.request.urlopen(req))['embeddings']
for t,g in zip(texts,got):
    r=emb(t); print(f"cos(engine, numpy reference) = {float(np.dot(r,np.array(g))):.6f}  {t}")
